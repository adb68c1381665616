"""Runs spread over worker processes: every object exactly once, and no
process ever lost, hung or left behind, whatever happens to it."""

from __future__ import annotations

import asyncio
import itertools
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import icanhazmodel
from icanhazmodel import _launch
from icanhazmodel._checksums import Expectation
from icanhazmodel._events import Landing
from icanhazmodel._launch import ForkServer
from icanhazmodel._limits import may_use_processes, processes_for
from icanhazmodel._manifest import PartialRecord
from icanhazmodel._messages import (
    Failed,
    Landed,
    Offer,
    Span,
    SpanDone,
    SpanResult,
    Task,
    whole_messages,
)
from icanhazmodel._models import RemoteObject
from tests.conftest import Bucket, entry_point, tree_of
from tests.faultproxy import Fault, fault_proxy
from tests.sample_tree import pattern
from tests.test_errors import _auth_enforced, _iam_client, _iam_user
from tests.test_multipart import upload_in_parts
from tests.test_rerun import _partials, _recorded_ranges, _wait_for

MiB = 1 << 20


def fetch(bucket: Bucket, key: str, dest: Path, **kwargs: object) -> icanhazmodel.FetchResult:
    kwargs.setdefault("endpoint_url", bucket.endpoint)
    return asyncio.run(icanhazmodel.fetch(bucket=bucket.name, key=key, dest=dest, **kwargs))


def children(pid: int) -> list[int]:
    """Processes whose parent is *pid* (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def descendants(pid: int) -> list[int]:
    """Its children, their children, and so on."""
    found = children(pid)
    for child in list(found):
        found += descendants(child)
    return found


def _is_fork_server(pid: int) -> bool:
    try:
        return b"_launch" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def workers_of(pid: int) -> list[int]:
    """A run's worker processes: forked by its fork server, or its own children."""
    found = []
    for child in children(pid):
        found += children(child) if _is_fork_server(child) else [child]
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start_cli(
    endpoint: str, bucket: str, dest: Path, *extra: str, **popen: Any
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [entry_point(), "-b", bucket, "--endpoint-url", endpoint, "-k", "p", "-m", str(dest),
         "--no-progress", *extra],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group, as a shell gives it
        **popen,
    )  # fmt: skip


# -- the split -----------------------------------------------------------------------------


def test_auto_leaves_small_runs_in_one_process_and_a_core_to_the_parent() -> None:
    assert processes_for(None, 1, 1024, cpus=16) == 1
    assert processes_for(None, 11, 415 * MiB, cpus=16) == 6
    assert processes_for(None, 1000, 16 * MiB, cpus=16) == 5
    # A full first page with more behind it: every CPU but the parent's.
    assert processes_for(None, 1000, 16 * MiB, cpus=16, more_listed=True) == 15
    assert processes_for(None, 1000, 16 * MiB, cpus=64, more_listed=True) == 32
    assert processes_for(None, 3, 16 * MiB, cpus=16, more_listed=True) == 1  # filtered down
    assert processes_for(None, 8, 8 << 30, cpus=16) == 15
    assert processes_for(None, 8, 8 << 30, cpus=2) == 1  # one core for the parent, one to work
    # One big object's ranges are spread over processes too.
    assert processes_for(None, 1, 10 << 30, cpus=16) == 15
    assert processes_for(None, 1, 200 << 20, cpus=16) == 3
    assert processes_for(None, 1, 100 << 20, cpus=16) == 1
    assert processes_for(3, 1, 1, cpus=1) == 3  # asked for: given


def test_messages_pickle_whole_and_equal() -> None:
    """Messages pickle by their field values (see pickled_by_fields): every
    field, defaults and nested values included, comes back equal."""
    obj = RemoteObject("p/é/x.bin", 5 * MiB, "abc-2", 1.5e9, ("CRC64NVME",), "v1")
    expect = Expectation("MD5-MULTIPART", b"\x01" * 16, 2, None)
    record = PartialRecord(
        "p/.x.bin.icanhazmodel-partial", "p/é/x.bin", "abc-2", 5 * MiB, MiB, "crc32", ((0, 10, 7),)
    )
    messages = [
        obj,
        Task(1, obj, ("p", "é", "x.bin"), 8 * MiB, (record,), sweep_again=True, share=True),
        Span(2, 1, obj, ("p", "é", "x.bin"), "t", 0, 10, "crc32", expect, True),
        SpanResult(1, 0, 10, None, b"h"),
        Landing("md5", 10, 123, 10, "why"),
        Landed(1, Landing("md5", 10, 123, 7)),
        Failed(1, "no", needs_botocore=True),
        SpanDone(2, 7),
        Offer(1, "t", "crc32", expect, False, ((0, 10), (10, 20))),
    ]
    for message in messages:
        back = pickle.loads(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))
        assert back == message
        assert type(back) is type(message)


@settings(max_examples=50, deadline=None)
@given(
    messages=st.lists(
        st.one_of(st.integers(), st.binary(max_size=300), st.text(max_size=40)), max_size=12
    ),
    cuts=st.lists(st.integers(0, 5000), max_size=6),
)
def test_messages_read_on_the_loop_come_whole_and_in_order(
    messages: list[object], cuts: list[int]
) -> None:
    """Whatever a worker's Connection sends, however the bytes arrive."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        sender = Connection(theirs.detach())
        for message in messages:
            sender.send(message)
        sender.close()
        wire = b""
        while chunk := ours.recv(1 << 16):
            wire += chunk
    inbox = bytearray()
    got: list[object] = []
    for start, end in itertools.pairwise(
        [0, *sorted(c % (len(wire) + 1) for c in cuts), len(wire)]
    ):
        inbox += wire[start:end]
        got += whole_messages(inbox)
    assert got == messages
    assert not inbox
    # The long form Connection uses past 2 GiB: -1, then an 8-byte length.
    body = pickle.dumps("long")
    inbox = bytearray(struct.pack("!i", -1) + struct.pack("!Q", len(body)) + body)
    assert whole_messages(inbox) == ["long"]


def test_a_fork_server_starts_only_where_processes_could_follow() -> None:
    assert may_use_processes(None, cpus=16)
    assert not may_use_processes(None, cpus=2)  # auto on 2 cores: always one process
    assert may_use_processes(None, cpus=3)
    assert may_use_processes(2, cpus=1)
    assert not may_use_processes(1, cpus=64)
    # They agree: whenever auto could pick workers, the server was started.
    for cpus in range(1, 40):
        picks = {processes_for(None, f, f << 30, cpus) for f in (1, 500, 5000)}
        assert may_use_processes(None, cpus) == (max(picks) > 1)


def test_one_process_runs_everything_here(bucket: Bucket, tmp_path: Path) -> None:
    bucket.put_many({f"p/{i:03d}": b"%d" % i for i in range(300)})
    result = fetch(bucket, "p", tmp_path, processes=1)
    assert result.processes == 1
    assert result.downloaded == 300


_names = st.text(alphabet="ab/é-", min_size=1, max_size=8).filter(
    lambda k: "//" not in k and not k.startswith("/") and not k.endswith("/")
)


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(keys=st.sets(_names, min_size=2, max_size=40), processes=st.integers(2, 4))
def test_every_object_lands_exactly_once_whatever_the_split(
    bucket: Bucket, tmp_path_factory: pytest.TempPathFactory, keys: set[str], processes: int
) -> None:
    prefix = f"p{len(os.listdir(tmp_path_factory.getbasetemp()))}"
    dest = tmp_path_factory.mktemp("split")
    expected = {}
    for key in keys:
        bucket.put(f"{prefix}/{key}", key.encode() * 3)
        expected[f"{prefix}/{key}"] = key.encode() * 3
    result = fetch(bucket, prefix, dest, processes=processes, include=["*"])
    # Keys that are both a file and a folder are refused, the same on any split.
    landed = tree_of(dest)
    assert result.processes == processes
    assert result.downloaded == len(landed) == len(expected) - result.refused
    assert all(expected[path] == data for path, data in landed.items())
    assert _partials(dest) == []


def test_big_and_small_objects_over_four_processes(bucket: Bucket, tmp_path: Path) -> None:
    big = pattern("big4", 20 * MiB + 7)
    bucket.put("p/big.bin", big)
    bucket.put_many({f"p/s/{i:03d}": pattern(f"s{i}", 1000 + i) for i in range(100)})
    result = fetch(bucket, "p", tmp_path, processes=4)
    assert result.ok
    assert result.processes == 4
    assert result.bytes_downloaded == len(big) + sum(1000 + i for i in range(100))
    assert (tmp_path / "p/big.bin").read_bytes() == big
    rerun = fetch(bucket, "p", tmp_path, processes=4)  # the parent kept the records
    assert rerun.skipped == 101


# -- one object over several processes ----------------------------------------------------

PART = 5 * MiB


def _big_in_parts(bucket: Bucket) -> tuple[bytes, str]:
    """A 20 MiB object uploaded in four 5 MiB parts: four ranges even at -j 1,
    each checked by its part's MD5 as it streams. (Its bytes, its GETs.)"""
    big = pattern("spread", 4 * PART)
    upload_in_parts(bucket.client, bucket.name, "p/big.bin", big, [PART] * 4, None)
    return big, f"GET /{bucket.name}/p/big.bin"


@pytest.mark.parametrize(("processes", "at_once"), [(1, 1), (2, 2)])
def test_one_big_object_is_fetched_by_every_process_at_once(
    bucket: Bucket, tmp_path: Path, processes: int, at_once: int
) -> None:
    big, gets = _big_in_parts(bucket)
    with fault_proxy(bucket.endpoint) as proxy:
        proxy.add(Fault(key_contains="big.bin", times=8, throttle=8 * MiB))
        result = fetch(
            bucket, "p", tmp_path, processes=processes, concurrency=1, endpoint_url=proxy.endpoint
        )
    assert result.ok
    assert result.processes == processes
    assert result.verification == {"etag-md5-multipart": 1}
    # One request in flight per process (-j 1), all on the one object.
    assert proxy.most_at_once(gets) == at_once
    assert len(proxy.requests("GET", "big.bin")) == 4
    assert (tmp_path / "p/big.bin").read_bytes() == big
    assert _partials(tmp_path) == []


def _flock_holder(path: Path) -> int | None:
    """The process holding a flock on *path*, from /proc/locks."""
    inode = path.stat().st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()  # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"
        if fields[1] == "FLOCK" and int(fields[5].rsplit(":", 1)[1]) == inode:
            return int(fields[4])
    return None


@pytest.mark.parametrize("victim", ["owner", "helper"])
def test_a_worker_killed_mid_object_loses_nothing(
    bucket: Bucket, tmp_path: Path, victim: str
) -> None:
    """The object's owner (its temp file's lock holder) or the process
    fetching one of its ranges dies with both ranges in flight: the file
    still lands whole and checked, and no temp file is left."""
    big, gets = _big_in_parts(bucket)
    with fault_proxy(bucket.endpoint) as proxy:
        proxy.add(Fault(key_contains="big.bin", times=20, throttle=4 * MiB))
        proc = start_cli(proxy.endpoint, bucket.name, tmp_path, "-P", "2", "-j", "1")
        _wait_for(lambda: proxy.in_flight(gets, for_at_least=0.2) == 2 or proc.poll() is not None)
        [partial] = _partials(tmp_path)
        owner = _flock_holder(partial)
        workers = workers_of(proc.pid)
        assert owner in workers
        helper = next(pid for pid in workers if pid != owner)
        os.kill(owner if victim == "owner" else helper, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "stopped" in stderr
    assert "1 file downloaded" in stderr, stderr
    assert (tmp_path / "p/big.bin").read_bytes() == big
    assert _partials(tmp_path) == []


# -- how workers start ----------------------------------------------------------------------


@pytest.mark.skipif(not ForkServer.available(), reason="fork servers need Linux pidfds")
def test_workers_are_forked_by_a_warm_server_and_outlive_it_not_the_run(
    bucket: Bucket, tmp_path: Path
) -> None:
    files = _slow_tree(bucket, 20)
    with fault_proxy(bucket.endpoint) as proxy:
        proxy.add(Fault(key_contains="/p/", times=20, throttle=150_000))
        proc = start_cli(proxy.endpoint, bucket.name, tmp_path, "-P", "2", "-j", "2")
        _wait_for(lambda: len(workers_of(proc.pid)) == 2 or proc.poll() is not None)
        [server] = children(proc.pid)
        assert _is_fork_server(server)
        assert sorted(children(server)) == sorted(workers_of(proc.pid))
        # awscrt was loaded by the server (it computes no CRC itself), so no
        # worker pays its 50-70 ms load at its first CRC.
        assert "_awscrt" in Path(f"/proc/{server}/maps").read_text()
        everyone = descendants(proc.pid)
        os.kill(server, signal.SIGKILL)  # its workers are on their own by now
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "2 processes" in stderr
    assert tree_of(tmp_path) == files
    assert not any(alive(pid) for pid in everyone)


def test_workers_are_spawned_when_the_fork_server_cannot_serve(
    bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = _slow_tree(bucket, 12)
    monkeypatch.setattr(_launch, "_SERVER", "raise SystemExit(3)")  # dies at once
    before = set(descendants(os.getpid()))
    result = fetch(bucket, "p", tmp_path, processes=2)
    assert result.ok
    assert result.processes == 2
    assert tree_of(tmp_path) == files
    _wait_for(lambda: not [p for p in descendants(os.getpid()) if p not in before and alive(p)])


# -- faults -------------------------------------------------------------------------------


def _slow_tree(bucket: Bucket, count: int) -> dict[str, bytes]:
    files = {f"p/{i:02d}": pattern(f"k{i}", 30_000) for i in range(count)}
    for key, data in files.items():
        bucket.put(key, data)
    return files


def test_a_killed_worker_loses_nothing(bucket: Bucket, tmp_path: Path) -> None:
    files = _slow_tree(bucket, 40)
    with fault_proxy(bucket.endpoint) as proxy:
        proxy.add(Fault(key_contains="/p/", times=40, throttle=150_000))
        proc = start_cli(proxy.endpoint, bucket.name, tmp_path, "-P", "2", "-j", "2")
        _wait_for(lambda: (tmp_path / "p/00").exists() or proc.poll() is not None)
        workers = workers_of(proc.pid)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "stopped" in stderr
    assert tree_of(tmp_path) == files
    assert _partials(tmp_path) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_every_process_fast_and_keeps_what_resumes(
    bucket: Bucket, tmp_path: Path, sig: signal.Signals
) -> None:
    big = pattern("sigP", 40 * MiB)
    bucket.put("p/big.bin", big)
    for key, data in _slow_tree(bucket, 20).items():
        bucket.put(key, data)
    with fault_proxy(bucket.endpoint) as proxy:
        proxy.add(Fault(key_contains="big.bin", times=1, throttle=64 * 1024))
        proc = start_cli(proxy.endpoint, bucket.name, tmp_path, "-P", "3", "-j", "4")
        _wait_for(lambda: _recorded_ranges(tmp_path) >= 1 or proc.poll() is not None)
        assert len(workers_of(proc.pid)) == 3
        everyone = descendants(proc.pid)  # the fork server too
        sent = time.monotonic()
        if sig is signal.SIGINT:  # Ctrl-C: the terminal signals the whole group
            os.killpg(proc.pid, sig)
        else:  # a pod's stop: the main process only
            proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=10)
        took = time.monotonic() - sent
    assert proc.returncode == 130, stderr
    assert took < 2.0
    assert "Traceback" not in stderr
    assert not any(alive(pid) for pid in everyone)
    assert len(_partials(tmp_path)) == 1  # the big file's, resumable
    result = fetch(bucket, "p", tmp_path, processes=1)
    assert (tmp_path / "p/big.bin").read_bytes() == big
    assert result.ok
    assert _partials(tmp_path) == []


def test_no_worker_outlives_a_parent_killed_hard(bucket: Bucket, tmp_path: Path) -> None:
    _slow_tree(bucket, 40)
    with fault_proxy(bucket.endpoint) as proxy:
        proxy.add(Fault(key_contains="/p/", times=40, throttle=50_000))
        proc = start_cli(proxy.endpoint, bucket.name, tmp_path, "-P", "2", "-j", "2")
        _wait_for(lambda: len(workers_of(proc.pid)) == 2 or proc.poll() is not None)
        everyone = descendants(proc.pid)
        assert len(everyone) >= 2
        proc.kill()
        proc.communicate()
        _wait_for(lambda: not any(alive(pid) for pid in everyone), timeout=5)


# -- credentials --------------------------------------------------------------------------


def test_rotated_credentials_reach_the_workers(
    bucket: Bucket, tmp_path: Path, aws_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A credential_process hands out key A, then (on refresh) key B: the
    workers' requests switch to B without a restart."""
    files = _slow_tree(bucket, 40)
    _iam_user(bucket, monkeypatch, reader=True)
    first = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
    second = _iam_client(bucket.endpoint).create_access_key(UserName=f"reader-{bucket.name}")
    second_key = second["AccessKey"]["AccessKeyId"], second["AccessKey"]["SecretAccessKey"]
    which = aws_env / "which"
    which.write_text("0")
    script = aws_env / "creds.py"
    # Expiring 15 min + 1 s from now: botocore refreshes 15 min ahead, so in 1 s
    # (and each second after), well before the run's first look, 2 s in.
    script.write_text(
        "import datetime, json, pathlib\n"
        f"keys = [{first!r}, {second_key!r}]\n"
        f"key = keys[int(pathlib.Path({str(which)!r}).read_text())]\n"
        "expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=901)\n"
        "print(json.dumps({'Version': 1, 'AccessKeyId': key[0], 'SecretAccessKey': key[1],\n"
        "                  'Expiration': expires.isoformat()}))\n"
    )
    (aws_env / "config").write_text(
        f"[profile rotating]\ncredential_process = {sys.executable} {script}\n"
    )
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with _auth_enforced(bucket.endpoint), fault_proxy(bucket.endpoint) as proxy:
        proxy.add(Fault(key_contains="/p/", times=40, throttle=60_000))
        proc = start_cli(
            proxy.endpoint, bucket.name, tmp_path, "-P", "2", "-j", "1", "-p", "rotating"
        )
        _wait_for(lambda: (tmp_path / "p/00").exists() or proc.poll() is not None)
        which.write_text("1")
        _, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 0, stderr
    assert tree_of(tmp_path) == files
    worker_gets = [
        s.headers.get("authorization", "")
        for s in proxy.requests("GET", "/p/")
        if s.headers.get("user-agent", "").startswith("icanhazmodel/")
    ]
    assert any(first[0] in auth for auth in worker_gets)
    assert any(second_key[0] in auth for auth in worker_gets)


@pytest.mark.parametrize(("value", "culprit"), [("abc", "'abc'"), ("0", "not 0")])
def test_a_bad_process_count_is_one_line(tmp_path: Path, value: str, culprit: str) -> None:
    from tests.conftest import run_cli
    from tests.test_errors import assert_one_line_error

    result = run_cli("-b", "b", "-k", "p", "-m", str(tmp_path), "-P", value)
    assert_one_line_error(result, 2, "--processes", culprit)
