"""Soak: thousands of objects through a proxy that misbehaves a few percent of
the time. Run with `make soak`; not part of `make test`."""

from __future__ import annotations

import asyncio
import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import icanhazmodel
from tests.conftest import Bucket
from tests.faultproxy import Fault, fault_proxy
from tests.sample_tree import pattern

pytestmark = pytest.mark.soak

MiB = 1 << 20
SMALL_OBJECTS = 3000
BIG_OBJECTS = 4


def _objects() -> dict[str, bytes]:
    objects = {
        f"soak/small/{i // 100:02d}/{i:05d}.bin": pattern(f"s{i}", 2000 + i % 7919)
        for i in range(SMALL_OBJECTS)
    }
    objects.update(
        {f"soak/big/{i}.bin": pattern(f"b{i}", 24 * MiB + i * 999) for i in range(BIG_OBJECTS)}
    )
    return objects


@pytest.mark.timeout(1800)
def test_thousands_of_objects_survive_a_flaky_network(
    bucket: Bucket, tmp_path: Path, request_path: str
) -> None:
    objects = _objects()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda item: bucket.put(*item), objects.items()))

    with fault_proxy(bucket.endpoint) as proxy:
        for fault in (
            Fault(cut_after=700, probability=0.03, times=10**9),
            Fault(status_503=True, probability=0.02, times=10**9),
            # Corruption in transit strikes an object once: an object corrupted
            # on every attempt is reported, never landed (test_integrity.py).
            Fault(flip_at=100, probability=0.01, times=10**9, once_per_path=True),
            Fault(stall_after=10, stall_seconds=3, probability=0.005, times=10**9),
            Fault(method="HEAD", status_503=True, probability=0.05, times=10**9),
        ):
            proxy.add(fault)
        result = asyncio.run(
            icanhazmodel.fetch(
                bucket=bucket.name,
                key="soak",
                dest=tmp_path,
                endpoint_url=proxy.endpoint,
                concurrency=16,
                retries=8,
                stall_timeout=1.0,
            )
        )
        injected = {f"{f.method} {_kind(f)}": f.applied for f in proxy.faults}
        requests = len(proxy.seen)

    lost = [
        key
        for key, data in objects.items()
        if not (tmp_path / key).is_file()
        or hashlib.sha256((tmp_path / key).read_bytes()).digest() != hashlib.sha256(data).digest()
    ]
    print(
        f"\nsoak ({request_path} GETs): {len(objects)} objects, {requests} requests, "
        f"faults injected: {injected}, "
        f"lost or wrong: {len(lost)}, result: {result.downloaded} downloaded, "
        f"{result.failed} failed in {result.seconds:.1f} s, verified {result.verification}"
    )
    for problem in result.problems:
        print(f"soak problem: {problem}")
    assert sum(injected.values()) > 0.02 * len(objects)
    assert lost == []
    assert result.ok, result.problems


def _kind(fault: Fault) -> str:
    if fault.status_503:
        return "503"
    if fault.cut_after is not None:
        return "cut"
    if fault.flip_at is not None:
        return "flip"
    return "stall"
