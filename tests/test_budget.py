"""The memory budget of requests in flight: taken in turn, never lost."""

from __future__ import annotations

import anyio
import pytest

from icanhazmodel._budget import Budget


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
