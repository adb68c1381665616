"""The memory budget of requests in flight: taken in turn, never lost."""

from __future__ import annotations

import anyio
import pytest

from icanhazmodel._budget import Budget
from icanhazmodel._config import FetchConfig
from icanhazmodel._window import AUTO_STREAMS, AUTO_TLS_STREAMS


def test_takes_wait_their_turn_and_get_what_is_given_back() -> None:
    async def main() -> list[str]:
        budget = Budget(10)
        order: list[str] = []

        async def take(name: str, amount: int) -> None:
            await budget.take(amount)
            order.append(name)

        await budget.take(8)
        async with anyio.create_task_group() as group:
            group.start_soon(take, "big", 6)
            await anyio.sleep(0.01)
            group.start_soon(take, "small", 1)  # fits, but waits behind "big"
            await anyio.sleep(0.01)
            assert order == []
            budget.give(8)
        assert budget.free == 10 - 6 - 1
        return order

    assert anyio.run(main) == ["big", "small"]


def test_a_take_cancelled_while_waiting_loses_nothing_and_blocks_nobody() -> None:
    async def main() -> tuple[int, int]:
        budget = Budget(4)
        await budget.take(4)
        with anyio.move_on_after(0.01):
            await budget.take(3)  # cancelled while waiting: leaves the line
        budget.give(4)
        nothing_handed_out = budget.free
        with anyio.fail_after(1):
            await budget.take(4)  # nobody cancelled stands before it
        return nothing_handed_out, budget.free

    assert anyio.run(main) == (4, 0)


def test_a_cancelled_run_gives_back_what_its_requests_held() -> None:
    async def main() -> int:
        budget = Budget(4)

        async def request() -> None:
            await budget.take(2)
            try:
                await anyio.sleep_forever()
            finally:
                budget.give(2)

        async with anyio.create_task_group() as group:
            for _ in range(5):  # two hold, three wait
                group.start_soon(request)
            await anyio.sleep(0.01)
            group.cancel_scope.cancel()
        return budget.free

    assert anyio.run(main) == 4


@pytest.mark.parametrize("amount", [0, 1, 10, 11])
def test_no_amount_waits_forever(amount: int) -> None:
    async def main() -> int:
        budget = Budget(10)
        with anyio.fail_after(1):
            await budget.take(amount)
        budget.give(amount)
        return budget.free

    assert anyio.run(main) == 10


# -- how many streamed ranges the budget is sized for ----------------------------------


@pytest.mark.parametrize(
    ("endpoint", "environ", "concurrency", "streams"),
    [
        ("http://127.0.0.1:9000", {}, None, AUTO_STREAMS),
        ("https://minio.example:9000", {}, None, AUTO_TLS_STREAMS),
        ("HTTP://127.0.0.1:9000", {}, None, AUTO_STREAMS),
        (None, {}, None, AUTO_TLS_STREAMS),  # AWS's own endpoint
        (None, {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"}, None, AUTO_STREAMS),
        (None, {"AWS_ENDPOINT_URL_S3": "https://s3.local"}, None, AUTO_TLS_STREAMS),
        ("https://minio.example:9000", {}, 100, 100),  # -j N: N, over TLS too
        ("http://127.0.0.1:9000", {}, 8, 8),
    ],
)
def test_tls_budgets_fewer_streams_under_auto(
    monkeypatch: pytest.MonkeyPatch,
    endpoint: str | None,
    environ: dict[str, str],
    concurrency: int | None,
    streams: int,
) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    config = FetchConfig(bucket="b", key="k", endpoint_url=endpoint, concurrency=concurrency)
    assert config.streams == streams
    assert AUTO_TLS_STREAMS < AUTO_STREAMS
