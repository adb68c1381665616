"""`make bench`: icanhazmodel against aws-cli and s5cmd on one local S3 server.

Starts s3rver (npm) on 127.0.0.1, loads the scenarios with deterministic
bytes, then downloads each with every tool into a fresh directory, taking
turns, and checks every file's sha256 after every run. Prints one table per
scenario and network profile: wall time median (min-max), MiB/s, objects/s,
peak RSS, and the ratio icanhazmodel / peer.

Network profiles (``--profiles``; see netem.py): ``loopback`` is s3rver as
it is; ``wan`` puts a proxy in front of it that adds 20 ms before each
answer, 50 ms before a list page and paces each connection to 20 MB/s;
``throttled`` admits 400 requests/s and answers the rest 503 SlowDown.
``--fixed-j 16,64`` adds icanhazmodel rows at fixed request counts, to see
how close the default comes to the best one.

Why s3rver: moto is faithful but serves ~150 small GETs/s from one Python
process and re-reads whole objects for ranged GETs, so it would measure
itself. s3rver (Node) streams files from disk and answers ranges properly.
Its known traps are handled here: listings past 1,000 keys need
NODE_OPTIONS=--openssl-legacy-provider, and its delimiter listing is buggy
(no tool here lists with a delimiter). It computes no S3 checksums, so
icanhazmodel verifies every object by its MD5 ETag: the "--no-verify" row
shows what that costs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from tests.bench.netem import PROFILES  # noqa: E402
from tests.sample_tree import MODEL_KEY, model_tree, pattern, s3_client  # noqa: E402

MiB = 1 << 20
BUCKET = "bench"
KEY = SECRET = "S3RVER"  # s3rver's fixed credentials


@dataclass(frozen=True)
class Scenario:
    name: str
    prefix: str
    objects: tuple[tuple[str, int, str], ...]  # key, size, seed for the bytes

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size, _ in self.objects)


def scenarios(scale: float) -> dict[str, Scenario]:
    seed = tuple((o.key, o.size, o.key) for o in model_tree(scale))
    small_count = max(50, int(5000 * scale))
    small = tuple(
        (f"small/{i // 500:02d}/{i:05d}.bin", 16 * 1024, f"s{i}") for i in range(small_count)
    )
    large_size = max(MiB, int(256 * MiB * scale))
    large = tuple((f"large/part-{i}.bin", large_size, f"l{i}") for i in range(4))
    # Start-up: one 1 KiB object, where the tools' own start is the whole run.
    one = (("one/config.json", 1024, "one"),)
    return {
        "one": Scenario("one object", "one", one),
        "seed": Scenario("seed tree", MODEL_KEY, seed),
        "small": Scenario("small", "small", small),
        "large": Scenario("large", "large", large),
    }


def object_bytes(key: str, size: int, seed: str) -> bytes:
    # The seed tree's literal files (yaml, json) come from sample_tree itself.
    for obj in model_tree(1.0):
        if obj.key == key and obj.literal is not None:
            return obj.literal
    return pattern(seed, size)


# -- the server --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_s3rver(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = HERE / "node_modules" / ".bin" / "s3rver"
    if not binary.exists():
        sys.exit(f"{binary} is missing: run `make bench` (it runs npm ci in {HERE})")
    port = free_port()
    env = {**os.environ, "NODE_OPTIONS": "--openssl-legacy-provider"}
    proc = subprocess.Popen(
        [
            str(binary),
            "-d",
            str(data_dir),
            "-a",
            "127.0.0.1",
            "-p",
            str(port),
            "-s",
            "--configure-bucket",
            BUCKET,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    sys.exit("s3rver did not start")


def load(endpoint: str, scenario: Scenario) -> dict[str, str]:
    """Upload a scenario; return each key's sha256."""
    client = s3_client(endpoint, checksums=False, key=KEY, secret=SECRET)

    def put(item: tuple[str, int, str]) -> tuple[str, str]:
        key, size, seed = item
        data = object_bytes(key, size, seed)
        for attempt in range(5):
            try:
                client.put_object(Bucket=BUCKET, Key=key, Body=data)
                break
            except Exception:
                if attempt == 4:
                    raise
                time.sleep(0.5)
        return key, hashlib.sha256(data).hexdigest()

    workers = 2 if scenario.total_bytes > 200 * MiB else 16
    with ThreadPoolExecutor(workers) as pool:
        return dict(pool.map(put, scenario.objects))


# -- the tools -----------------------------------------------------------------------


@dataclass(frozen=True)
class Tool:
    name: str
    argv: tuple[str, ...]  # with {endpoint}, {prefix}, {dest} to fill in


def start_netem(upstream: str, profile: str) -> tuple[subprocess.Popen[bytes], str]:
    """The proxy that gives *upstream* a real network's ways (see netem.py)."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "netem.py"), "--upstream", upstream, "--profile", profile],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    if not line.startswith("http://127.0.0.1:"):
        proc.kill()
        sys.exit(f"netem did not start ({line!r})")
    return proc, line


def tools(
    venv: Path, bench_venv: Path, baseline: Path | None = None, fixed_j: tuple[int, ...] = ()
) -> list[Tool]:
    ours = str(venv / "bin" / "icanhazmodel")
    common = (
        "-q",
        "--no-progress",
        "-b",
        BUCKET,
        "-k",
        "{prefix}",
        "-m",
        "{dest}",
        "--endpoint-url",
        "{endpoint}",
    )
    before = (
        [Tool("icanhazmodel (baseline)", (str(baseline / "bin" / "icanhazmodel"), *common))]
        if baseline is not None
        else []
    )
    fixed = [Tool(f"icanhazmodel -j {j}", (ours, *common, "-j", str(j))) for j in fixed_j]
    return [
        Tool("icanhazmodel", (ours, *common)),
        Tool("icanhazmodel --no-verify", (ours, *common, "--no-verify")),
        *fixed,
        *before,
        Tool(
            "aws s3 cp --recursive",
            (
                str(bench_venv / "bin" / "aws"),
                "--endpoint-url",
                "{endpoint}",
                "s3",
                "cp",
                "--recursive",
                "--only-show-errors",
                "--no-progress",
                f"s3://{BUCKET}/{{prefix}}/",
                "{dest}/{prefix}/",
            ),
        ),
        Tool(
            "obstore script",
            (
                str(bench_venv / "bin" / "python"),
                str(HERE / "obstore_fetch.py"),
                "{endpoint}",
                BUCKET,
                "{prefix}",
                "{dest}",
            ),
        ),
        Tool(
            "s5cmd",
            (
                str(bench_venv / "bin" / "s5cmd"),
                "--endpoint-url",
                "{endpoint}",
                "cp",
                f"s3://{BUCKET}/{{prefix}}/*",
                "{dest}/{prefix}/",
            ),
        ),
    ]


@dataclass
class Sample:
    wall: float
    rss_mib: float


@dataclass
class Row:
    tool: str
    samples: list[Sample] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # a peer's failed runs, said why

    @property
    def median(self) -> float:
        return statistics.median(s.wall for s in self.samples)


def run_tool(tool: Tool, endpoint: str, prefix: str, dest: Path, env: dict[str, str]) -> Sample:
    argv = [a.format(endpoint=endpoint, prefix=prefix, dest=dest) for a in tool.argv]
    log = dest.parent / "stderr.log"
    started = time.perf_counter()
    with open(log, "wb") as stderr:
        proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
        )
        # Not getrusage: Linux counts a child's peak RSS from the moment it
        # was forked, i.e. from this (large) process's. VmHWM is the peak of
        # the program itself since exec; polled, it misses at most the last
        # few milliseconds of growth.
        peak_kib = 0
        while proc.poll() is None:
            peak_kib = max(peak_kib, _vm_hwm_kib(proc.pid))
            time.sleep(0.005)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise ToolFailed(f"{tool.name} failed ({proc.returncode}): {log.read_text()[-2000:]}")
    return Sample(wall, peak_kib / 1024)


class ToolFailed(Exception):
    """A run that exited non-zero: fatal for icanhazmodel, a table note for a peer."""


def _vm_hwm_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def drop_caches() -> None:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:
        raise SystemExit(f"--drop-caches needs root: {exc}") from exc


def warm_up_memory(work: Path, size: int) -> None:
    """Write and delete a big file, so that every tool's writes land in page
    cache the VM has already backed: the first touch of guest memory costs
    many times a later one, and would otherwise favour whoever runs last."""
    path = work / "warm-up"
    block = b"\0" * MiB
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            f.write(block)
    path.unlink()


def files_under(root: Path) -> Iterator[Path]:
    for path in root.rglob("*"):
        if path.is_file() and ".icanhazmodel" not in path.relative_to(root).parts:
            yield path


def verify(dest: Path, expected: dict[str, str], tool: str) -> None:
    found = {p.relative_to(dest).as_posix(): p for p in files_under(dest)}
    if set(found) != set(expected):
        missing = sorted(set(expected) - set(found))[:5]
        extra = sorted(set(found) - set(expected))[:5]
        raise SystemExit(f"{tool}: wrong file set; missing {missing}, extra {extra}")
    for key, path in found.items():
        with open(path, "rb") as f:
            if hashlib.file_digest(f, "sha256").hexdigest() != expected[key]:
                raise SystemExit(f"{tool}: wrong bytes in {key}")


# -- the table -------------------------------------------------------------------------


def table(scenario: Scenario, rows: list[Row], profile: str) -> str:
    ours = next(r for r in rows if r.tool == "icanhazmodel")
    mib = scenario.total_bytes / MiB
    lines = [
        f"### {scenario.name}: {len(scenario.objects):,} objects, {mib:,.0f} MiB; "
        f"network: {profile} ({PROFILES[profile].describe()})",
        "",
        "| tool | wall median (min-max) | MiB/s | objects/s | peak RSS | icanhazmodel ÷ tool |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        if not row.samples:
            lines.append(f"| {row.tool} | failed: {'; '.join(row.failures)[:120]} | | | | |")
            continue
        walls = [s.wall for s in row.samples]
        rss = max(s.rss_mib for s in row.samples)
        ratio = ours.median / row.median
        failed = f" ({len(row.failures)} runs failed)" if row.failures else ""
        lines.append(
            f"| {row.tool}{failed} | {row.median:.2f} s ({min(walls):.2f}-{max(walls):.2f}) "
            f"| {mib / row.median:,.0f} | {len(scenario.objects) / row.median:,.0f} "
            f"| {rss:.0f} MiB | {ratio:.2f} |"
        )
    return "\n".join(lines)


_proxies: list[subprocess.Popen[bytes]] = []


def run_profile(
    args: argparse.Namespace,
    scenario: Scenario,
    expected: dict[str, str],
    all_tools: list[Tool],
    work: Path,
    env: dict[str, str],
    upstream: str,
    profile: str,
) -> str:
    """Every tool's runs of *scenario* under one network profile; its table."""
    endpoint = upstream
    if profile != "loopback":
        proxy, endpoint = start_netem(upstream, profile)
        _proxies.append(proxy)
    rows = [Row(t.name) for t in all_tools]
    for run in range(args.runs):
        order = list(zip(all_tools, rows, strict=True))
        if run % 2:
            order.reverse()  # take turns: nobody always runs first
        for tool, row in order:
            dest = work / "out"
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir()
            if args.drop_caches:
                drop_caches()
            try:
                sample = run_tool(tool, endpoint, scenario.prefix, dest, env)
            except ToolFailed as exc:
                if tool.name.startswith("icanhazmodel"):
                    raise SystemExit(str(exc)) from None
                print(f"  {exc}", flush=True)  # a peer's crash is its result, not the end
                row.failures.append(str(exc).splitlines()[0])
                continue
            verify(dest, expected, tool.name)
            row.samples.append(sample)
            print(
                f"  {scenario.name} ({profile}) run {run + 1}: {tool.name}: "
                f"{sample.wall:.2f} s, {sample.rss_mib:.0f} MiB",
                flush=True,
            )
    if profile != "loopback":
        proxy = _proxies.pop()
        proxy.kill()
        proxy.wait()
    report = table(scenario, rows, profile)
    print(f"\n{report}\n", flush=True)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="size/count of every scenario relative to the full one (default 1)",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per tool and scenario")
    parser.add_argument("--scenarios", default="one,seed,small,large")
    parser.add_argument(
        "--profiles",
        default="loopback,wan,throttled",
        help=f"network profiles to run each scenario under ({', '.join(PROFILES)})",
    )
    parser.add_argument(
        "--fixed-j",
        default="",
        help="also run icanhazmodel at these fixed request counts (e.g. 16,64)",
    )
    parser.add_argument("--tools", default="", help="comma-separated subset of tool names")
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv")
    parser.add_argument("--bench-venv", type=Path, default=ROOT / ".venv-bench")
    parser.add_argument(
        "--baseline-venv",
        type=Path,
        default=None,
        help="a venv with another icanhazmodel installed (an earlier commit), run alongside "
        "as 'icanhazmodel (baseline)' for before/after figures from the same run",
    )
    parser.add_argument(
        "--drop-caches",
        action="store_true",
        help="before every run, sync and drop the kernel's caches (root only): on some VMs "
        "file creation slows down many-fold as caches fill, whichever tool runs",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where downloads go (default: a temp dir on the same disk as /tmp)",
    )
    args = parser.parse_args()

    fixed_j = tuple(int(j) for j in args.fixed_j.split(",") if j.strip())
    profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
    if unknown := [p for p in profiles if p not in PROFILES]:
        parser.error(f"unknown profile(s) {unknown}: choose from {', '.join(PROFILES)}")
    all_tools = tools(args.venv, args.bench_venv, args.baseline_venv, fixed_j)
    if args.tools:
        wanted = {t.strip() for t in args.tools.split(",")}
        all_tools = [t for t in all_tools if t.name in wanted or t.name.split()[0] in wanted]
    work = Path(tempfile.mkdtemp(prefix="icanhazmodel-bench-", dir=args.workdir))
    home = work / "home"
    home.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "AWS_ACCESS_KEY_ID": KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        # ICANHAZMODEL_* settings (e.g. ICANHAZMODEL_LIST_FANOUT=0) reach the tool.
        **{k: v for k, v in os.environ.items() if k.startswith("ICANHAZMODEL_")},
    }
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    warm_up_memory(work, 3 * 1024 * MiB)
    server, endpoint = start_s3rver(work / "s3")
    print(f"s3rver at {endpoint}; scale {args.scale}, {args.runs} runs; {os.cpu_count()} cores\n")
    reports = []
    try:
        for name in args.scenarios.split(","):
            scenario = scenarios(args.scale)[name]
            started = time.perf_counter()
            expected = load(endpoint, scenario)
            print(f"loaded {scenario.name} in {time.perf_counter() - started:.1f} s", flush=True)
            for profile in profiles:
                reports.append(
                    run_profile(args, scenario, expected, all_tools, work, env, endpoint, profile)
                )
    finally:
        for proxy in _proxies:
            proxy.kill()
            proxy.wait()
        server.kill()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)
    print("\n\n".join(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
