"""A dry run over a wide prefix holds neither its listing nor its plan
(issue 12): its peak memory is the same at 20,000 keys as at 200,000.

moto cannot hold 200,000 objects in reasonable time, so the listings come
from the listing bench's synthetic endpoint (tests/bench/listing.py, on
127.0.0.1): ListObjectsV2 with delimiters, start-after and URL encoding,
made up on the fly, no delay added.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.bench.bench import _vm_hwm_kib

ROOT = Path(__file__).resolve().parent.parent
LISTING_BENCH = ROOT / "tests" / "bench" / "listing.py"


def _answers(port_file: Path) -> bool:
    """Whether the endpoint wrote its port and listens on it."""
    if not (port_file.exists() and port_file.read_text()):
        return False
    try:
        socket.create_connection(("127.0.0.1", int(port_file.read_text())), timeout=1).close()
    except OSError:
        return False
    return True


@contextmanager
def wide_endpoint(keys: int, tmp_path: Path) -> Iterator[str]:
    port_file = tmp_path / f"port-{keys}"
    server = subprocess.Popen(
        [sys.executable, str(LISTING_BENCH), "--serve", str(keys), "0", str(port_file)]
    )
    try:
        deadline = time.monotonic() + 60
        while not _answers(port_file):
            assert server.poll() is None, "the endpoint exited"
            assert time.monotonic() < deadline, "the endpoint never answered"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port_file.read_text()}"
    finally:
        server.terminate()
        server.wait()


def dry_run_peak_kib(endpoint: str, dest: Path) -> tuple[int, list[bytes]]:
    """The CLI's peak RSS (KiB) over a dry run of the whole prefix, and its output lines.

    VmHWM, polled: wait4's ru_maxrss would also count the RSS of this
    (pytest) process, which the child had until it exec'd.
    """
    out = dest.with_suffix(".jsonl")
    peak = 0
    with out.open("wb") as stdout:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "icanhazmodel"),
                *("-b", "wide", "-k", "wide", "-m", str(dest), "--endpoint-url", endpoint),
                *("--dry-run", "--json", "--no-progress"),
            ],
            stdout=stdout,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "ICANHAZMODEL_LIST_FANOUT": "1"},
        )
        while proc.poll() is None:
            peak = max(peak, _vm_hwm_kib(proc.pid))  # it only grows: the last read is near
            time.sleep(0.01)
    assert proc.returncode == 0
    return peak, out.read_bytes().splitlines()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_a_dry_runs_memory_does_not_grow_with_the_prefix(tmp_path: Path) -> None:
    peaks = {}
    for keys in (20_000, 100_000, 200_000):
        with wide_endpoint(keys, tmp_path) as endpoint:
            peak, lines = dry_run_peak_kib(endpoint, tmp_path / f"ptms-{keys}")
        assert len(lines) == keys + 1  # a line an object, then the totals
        assert b'"download":%d' % keys in lines[-1]
        peaks[keys] = peak
    # The fan-out's buffers (16 chains of up to 3 pages of 1,000 objects)
    # fill once a prefix holds some 50,000 keys; past that nothing grows.
    assert peaks[200_000] - peaks[20_000] < 10 * 1024, peaks
    assert peaks[200_000] - peaks[100_000] < 3 * 1024, peaks
    assert peaks[200_000] < 128 * 1024, peaks
