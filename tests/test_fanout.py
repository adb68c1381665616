"""A big prefix listed in parallel yields exactly what one listing does, in
the same order (issue 12): against a model of ListObjectsV2 for adversarial
key sets (hypothesis), and against moto over HTTP."""

from __future__ import annotations

import asyncio
import bisect
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import icanhazmodel
from icanhazmodel import _fanout, _flat
from icanhazmodel._fanout import fanned_out
from icanhazmodel._listxml import ListPage, cut_below
from icanhazmodel._models import RemoteObject
from tests.conftest import Bucket, new_bucket, tree_of
from tests.faultproxy import fault_proxy

HIGHEST = "\U0010ffff"


class ModelS3:
    """ListObjectsV2 as S3 documents it: keys in UTF-8 (code point) order;
    with a delimiter, keys that hold it after the prefix roll up into one
    CommonPrefix, counted once toward max-keys; StartAfter and continuation
    tokens resume strictly after a key (after a whole CommonPrefix for a
    token). Every request is recorded."""

    def __init__(self, keys: set[str], max_keys: int) -> None:
        self.keys = sorted(keys)
        self.max_keys = max_keys
        self.requests: list[tuple[str, str | None, str | None, str | None]] = []

    async def list_page(
        self,
        prefix: str,
        token: str | None,
        delimiter: str | None,
        start_after: str | None,
        below: str | None,
    ) -> ListPage:
        self.requests.append((prefix, token, delimiter, start_after))
        return cut_below(await self._page(prefix, token, delimiter, start_after), below)

    async def _page(
        self, prefix: str, token: str | None, delimiter: str | None, start_after: str | None
    ) -> ListPage:
        await asyncio.sleep(0)  # let the other listings run in between
        after = max(token or "", start_after or "")
        start = bisect.bisect_left(self.keys, prefix)
        if after:
            start = max(start, bisect.bisect_right(self.keys, after))
        objects: list[RemoteObject] = []
        prefixes: list[str] = []
        last = ""
        for key in self.keys[start:]:
            if not key.startswith(prefix):
                break  # keys under a prefix are contiguous
            rest = key[len(prefix) :]
            if delimiter and delimiter in rest:
                common = prefix + rest[: rest.index(delimiter) + len(delimiter)]
                if prefixes and prefixes[-1] == common:
                    continue
                if len(objects) + len(prefixes) == self.max_keys:
                    return ListPage(objects, last, prefixes)
                prefixes.append(common)
                last = common + HIGHEST  # a token resumes after the whole prefix
            else:
                if len(objects) + len(prefixes) == self.max_keys:
                    return ListPage(objects, last, prefixes)
                objects.append(RemoteObject(key, 1, "e", 0.0))
                last = key
        return ListPage(objects, None, prefixes)


def sequential(model: ModelS3, prefix: str) -> list[str]:
    async def run() -> list[str]:
        keys, token = [], None
        while True:
            page = await model.list_page(prefix, token, None, None, None)
            keys += [o.key for o in page.objects]
            if page.next_token is None:
                return keys
            token = page.next_token

    return asyncio.run(run())


def parallel(model: ModelS3, prefix: str) -> list[str]:
    """A first page as a run makes it, then the rest fanned out after its last key."""

    async def run() -> list[str]:
        first = await model.list_page(prefix, None, None, None, None)
        keys = [o.key for o in first.objects]
        if first.next_token is None or not keys:
            return keys
        async with fanned_out(model.list_page, prefix, keys) as pages:
            async for page in pages:
                assert page.more
                keys += [o.key for o in page.objects]
        return keys

    return asyncio.run(run())


segment = st.sampled_from(["a", "b", "a.b", "é", "a-", "0", "", "/", "ß", "a/"])
adversarial_keys = st.sets(
    st.lists(segment, min_size=1, max_size=5).map("/".join).map(lambda k: "p/" + k),
    min_size=0,
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(
    keys=adversarial_keys,
    noise=st.sets(st.sampled_from(["o", "p", "pa/x", "q/p/x", "p"]), max_size=3),
    max_keys=st.integers(1, 7),
    lookahead=st.integers(1, 4),
)
def test_fanned_out_listing_equals_one_listing(
    keys: set[str], noise: set[str], max_keys: int, lookahead: int
) -> None:
    """Deep and flat trees, keys that are prefixes of others, '/' runs, empty
    segments, unicode, markers, keys outside the prefix; pages of 1 to 7."""
    model = ModelS3(keys | noise, max_keys)
    original = _fanout.LOOKAHEAD
    _fanout.LOOKAHEAD = lookahead
    try:
        assert (
            parallel(model, "p/")
            == sequential(model, "p/")
            == sorted(k for k in keys | noise if k.startswith("p/"))
        )
    finally:
        _fanout.LOOKAHEAD = original


def parallel_counting(model: ModelS3, prefix: str) -> tuple[list[str], int]:
    """parallel(), and the most list requests that were in flight at once."""
    in_flight = peak = 0
    inner = model.list_page

    async def counting(*args: str | None) -> ListPage:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await asyncio.sleep(0.001)
            return await inner(*args)  # type: ignore[arg-type]
        finally:
            in_flight -= 1

    model.list_page = counting  # type: ignore[method-assign]
    return parallel(model, prefix), peak


def test_a_wide_tree_is_listed_concurrently() -> None:
    keys = {f"p/d{i:02d}/f{j:02d}" for i in range(20) for j in range(10)}
    model = ModelS3(keys, 5)
    listed, peak = parallel_counting(model, "p/")
    assert listed == sorted(keys)
    assert peak > 4


def test_a_failing_sub_listing_stops_the_listing_with_its_error() -> None:
    keys = {f"p/d{i}/f{j}" for i in range(5) for j in range(5)}
    model = ModelS3(keys, 3)
    inner = model.list_page

    async def failing(
        prefix: str, token: str | None, delimiter: str | None, after: str | None, below: str | None
    ) -> ListPage:
        if after == "p/d3":  # the chain that starts at p/d3/
            raise icanhazmodel.S3Error("listing p/d3/ broke")
        return await inner(prefix, token, delimiter, after, below)

    model.list_page = failing  # type: ignore[method-assign]
    with pytest.raises(icanhazmodel.S3Error, match="p/d3/"):
        parallel(model, "p/")


WIDE = {f"p/d{i % 40:02d}/f{i:04d}.bin": bytes([i % 251]) for i in range(1300)}
WIDE["p/d05"] = b"a file beside the folder d05/"
WIDE["p/d05.txt"] = b"sorts before d05/"


@pytest.fixture(scope="module")
def wide(moto_endpoint: str) -> Bucket:
    """A prefix of 40 folders and a first page of 1,000 keys, filled once."""
    return new_bucket(moto_endpoint, WIDE)


@pytest.mark.usefixtures("request_path")  # both listing paths: direct and botocore
def test_a_run_over_a_wide_prefix_on_moto_fans_out_and_gets_everything(
    wide: Bucket, tmp_path: Path
) -> None:
    """Over HTTP (moto's delimiter and start-after), with a first page of 1,000
    keys: the fan-out lists the rest; the plan (in its order), the refusals
    and the files are the sequential listing's."""
    bucket, objects = wide, WIDE

    def plan(fanout: str) -> tuple[list[tuple[str, str]], int]:
        os.environ["ICANHAZMODEL_LIST_FANOUT"] = fanout
        try:
            with fault_proxy(bucket.endpoint) as proxy:  # to count the listings
                planned = asyncio.run(
                    icanhazmodel.plan(
                        bucket=bucket.name, key="p", dest=tmp_path, endpoint_url=proxy.endpoint
                    )
                )
                fanned = sum("delimiter=" in seen.query for seen in proxy.requests("GET"))
        finally:
            del os.environ["ICANHAZMODEL_LIST_FANOUT"]
        return [(o.key, o.action.value) for o in planned.objects], fanned

    fanned, delimited = plan("1")
    one_by_one, none = plan("0")
    assert fanned == one_by_one  # the same plan, in the same order, refusals and all
    assert delimited == 1  # the fanned-out plan's one delimiter listing
    assert none == 0
    assert {key for key, _ in fanned} == set(objects)
    # p/d05 is a file and a folder: the keys under the folder are refused either way.
    refused = {key for key in objects if key.startswith("p/d05/")}
    assert {key for key, action in fanned if action == "refused"} == refused
    # And the fanned-out fetch lands exactly the rest.
    result = asyncio.run(
        icanhazmodel.fetch(bucket=bucket.name, key="p", dest=tmp_path, endpoint_url=bucket.endpoint)
    )
    assert {f"{p.key} {p.status}" for p in result.problems} == {f"{k} refused" for k in refused}
    assert tree_of(tmp_path) == {key: data for key, data in objects.items() if key not in refused}


@pytest.mark.parametrize(
    ("keys", "most"),
    [
        # Flat, then a few folders: one delimiter page, then chains cut where
        # the sample says (see _flat), each one request more than its pages.
        ({f"p/f{i:05d}" for i in range(5000)} | {f"p/z/d{i}/x" for i in range(3)}, 20),
        # 100 folders of 60: chains of about two pages, each read to its end.
        ({f"p/d{i:03d}/f{j:02d}" for i in range(100) for j in range(60)}, 30),
        # The same under train/ and val/: cut inside them (two more delimiter pages).
        (
            {
                f"p/{s}/d{i:03d}/f{j:02d}"
                for s in ("train", "val")
                for i in range(50)
                for j in range(60)
            },
            32,
        ),
    ],
    ids=["flat", "folders", "narrow-top"],
)
def test_fanning_out_costs_few_requests_beyond_the_pages(keys: set[str], most: int) -> None:
    """A flat prefix is not walked by delimiter pages to its end (that listed
    it twice); chains are cut to about CHAIN_PAGES pages, so their partial
    last pages stay a fraction of all."""
    model = ModelS3(keys, 100)
    assert parallel(model, "p/") == sorted(keys)
    pages = -(-len(keys) // 100)
    assert len(model.requests) <= pages + most


def test_a_narrow_level_is_cut_at_the_folders_inside_it() -> None:
    """A dataset's train/ and val/ hold everything: the fan-out follows them
    down and lists their folders concurrently, not train/ as one chain."""
    keys = {
        f"p/{s}/d{i:02d}/f{j:02d}" for s in ("train", "val") for i in range(30) for j in range(8)
    }
    model = ModelS3(keys, 5)
    listed, peak = parallel_counting(model, "p/")
    assert listed == sorted(keys)
    assert peak > 4
    delimited = {prefix for prefix, _, delimiter, _ in model.requests if delimiter}
    assert delimited == {"p/", "p/train/", "p/val/"}


flat_names = st.sampled_from(
    [
        lambda i: f"p/f{i:05d}",
        lambda i: f"p/{i * 7919 % 65536:04x}.bin",
        lambda i: f"p/img_{i * 3:08d}.jpg",
        lambda i: f"p/{'ab'[i % 2]}{i:03d}",
    ]
)


@settings(max_examples=150, deadline=None)
@given(
    name=flat_names,
    count=st.integers(30, 400),
    extra=st.sets(st.sampled_from(["p/z/x", "p/f", "p/~", "p/0/0", "p/img_", "p/é"]), max_size=3),
    max_keys=st.integers(3, 9),
)
def test_a_flat_prefix_cut_by_guessed_boundaries_lists_every_key_once(
    name: Callable[[int], str], count: int, extra: set[str], max_keys: int
) -> None:
    """Keys side by side (counters, hashes, gaps), with odd ones mixed in:
    guessed boundaries fall anywhere, and every key still comes once, in order."""
    keys = {name(i) for i in range(count)} | extra
    model = ModelS3(keys, max_keys)
    original = _flat.MIN_SAMPLE
    _flat.MIN_SAMPLE = 3  # pages of a few keys here
    try:
        assert parallel(model, "p/") == sequential(model, "p/") == sorted(keys)
    finally:
        _flat.MIN_SAMPLE = original


def test_a_flat_prefix_is_listed_concurrently() -> None:
    keys = {f"p/img_{i:08d}.jpg" for i in range(5000)}
    model = ModelS3(keys, 100)
    assert parallel(model, "p/") == sorted(keys)
    chains = [r for r in model.requests if r[1] is None and r[2] is None]
    assert len(chains) > 10  # one chain before (and the walk first)


@given(st.lists(st.text("0123456789abf_.", max_size=10), min_size=2, max_size=30))
def test_a_flat_guess_keeps_key_order(suffixes: list[str]) -> None:
    """Values never reverse key order, boundaries only grow, and a range's
    StartAfter sorts before its low end."""
    keys = sorted({"p/" + s for s in suffixes})
    sample = [f"p/{i:04d}" for i in range(120)]
    guess = _flat.FlatGuess.from_sample(sample, 10, "p/")
    assert guess is not None
    values = [guess.value(k) for k in keys]
    assert values == sorted(values)
    after = sample[-1]
    for _ in range(20):
        boundary = guess.next_boundary(after)
        if boundary is None:
            break
        assert boundary > after
        assert _flat.just_before(boundary) < boundary
        after = boundary


@settings(max_examples=300)
@given(
    alphabet=st.sets(st.sampled_from("0123456789abcxyz_-~ "), min_size=2, max_size=12).map(
        lambda chars: "".join(sorted(chars))
    ),
    width=st.integers(1, 6),
    numbers=st.lists(st.integers(0, 10**12), min_size=2, max_size=10),
)
def test_a_flat_guess_spells_the_smallest_key_at_or_above_a_number(
    alphabet: str, width: int, numbers: list[int]
) -> None:
    """key() is value()'s ceiling: never below the number, in order, and exact
    on keys it can spell, so boundaries only grow, a step at a time."""
    guess = _flat.FlatGuess("p/", alphabet, width, 0, 1.0)
    end = (2 * len(alphabet) + 2) ** width
    spelled = []
    for number in sorted(n % end for n in numbers):
        key = guess.key(number)
        if key is None:
            continue  # above every key of the width
        assert guess.value(key) >= number
        assert guess.key(guess.value(key)) == key
        spelled.append(key)
    assert spelled == sorted(spelled)
    guess.chain_keys = 1
    after = "p/"
    for _ in range(30):
        boundary = guess.next_boundary(after)
        if boundary is None:
            break
        assert boundary > after
        after = boundary


def test_a_cancelled_reader_ends_the_listing_with_its_cancellation() -> None:
    """A SIGTERM cancels the run's task while it waits for the listing's next
    page and the listing waits for room to queue more (issue 21, 7): the
    reader's end closes before the listing tasks are cancelled, and what ends
    the listing must be that cancellation, not a BrokenResourceError from a
    listing task with no one left to read it."""
    store = ModelS3({f"p/f{i:06d}.jpg" for i in range(30_000)}, max_keys=100)
    first = store.keys[:100]
    never = asyncio.Event()

    async def first_chain_hangs(
        prefix: str, token: str | None, delimiter: str | None, after: str | None, below: str | None
    ) -> ListPage:
        if delimiter is None and after == first[-1]:
            await never.wait()  # the reader waits here, on the first chain
        return await store.list_page(prefix, token, delimiter, after, below)

    async def read_until_cancelled() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().call_later(0.3, task.cancel)
        async with fanned_out(first_chain_hangs, "p/", first) as pages:
            async for _ in pages:
                pass

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(read_until_cancelled())
