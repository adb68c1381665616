"""Listing-bound runs on a wide prefix: s5cmd ls vs a dry run, a first
download and a rerun of an unchanged prefix (issue 12).

A tiny read-only S3 endpoint on 127.0.0.1 (aiohttp, in its own process)
serves N one-byte objects in 1,000 folders, made up on the fly, and adds a
delay to every list page (S3's own list latency is of that order: 50 ms by
default). It answers ListObjectsV2, HEAD and GET; nothing is checked, signed
or stored. Reports wall time, CPU time (the tool and its children) and peak
RSS per run; ratios against `s5cmd ls` in the same run.

    .venv/bin/python tests/bench/listing.py [--keys 200000] [--download-keys 20000] [--runs 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

from tests.bench.bench import _vm_hwm_kib  # noqa: E402  (the same VmHWM poll as make bench)

BUCKET = "wide"
MODIFIED = "Tue, 03 Mar 2026 10:00:00 GMT"
MODIFIED_ISO = "2026-03-03T10:00:00.000Z"


def keys_for(count: int) -> list[str]:
    return sorted(f"wide/d{i % 1000:03d}/f{i:07d}.bin" for i in range(count))


def body_of(key: str) -> bytes:
    return bytes([hashlib.md5(key.encode()).digest()[0]])


def serve(count: int, delay_ms: float, port_file: str) -> None:
    import asyncio
    import bisect

    from aiohttp import web

    keys = keys_for(count)
    etags = {}

    def etag(key: str) -> str:
        if key not in etags:
            etags[key] = hashlib.md5(body_of(key)).hexdigest()
        return etags[key]

    async def bucket(request: web.Request) -> web.Response:
        query = request.query
        await asyncio.sleep(delay_ms / 1000)
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter", "")
        after = max(query.get("continuation-token", ""), query.get("start-after", ""))
        limit = min(int(query.get("max-keys", "1000")), 1000)
        i = bisect.bisect_left(keys, prefix)
        if after:
            i = max(i, bisect.bisect_right(keys, after))
        page: list[str] = []
        prefixes: list[str] = []
        last, more = "", False
        while i < len(keys) and keys[i].startswith(prefix):
            if len(page) + len(prefixes) == limit:
                more = True
                break
            rest = keys[i][len(prefix) :]
            if delimiter and delimiter in rest:
                common = prefix + rest[: rest.index(delimiter) + 1]
                prefixes.append(common)
                last = common + "\U0010ffff"
                i = bisect.bisect_left(keys, last)  # past every key under it
                continue
            page.append(keys[i])
            last = keys[i]
            i += 1
        encode = query.get("encoding-type") == "url"
        contents = "".join(
            f"<Contents><Key>{escape(quote(k) if encode else k)}</Key>"
            f"<LastModified>{MODIFIED_ISO}</LastModified><ETag>&quot;{etag(k)}&quot;</ETag>"
            "<Size>1</Size><StorageClass>STANDARD</StorageClass></Contents>"
            for k in page
        )
        commons = "".join(
            f"<CommonPrefixes><Prefix>{escape(quote(c) if encode else c)}</Prefix></CommonPrefixes>"
            for c in prefixes
        )
        token_xml = f"<NextContinuationToken>{escape(last)}</NextContinuationToken>" if more else ""
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Name>{BUCKET}</Name><Prefix>{escape(prefix)}</Prefix>"
            f"<KeyCount>{len(page) + len(prefixes)}</KeyCount><MaxKeys>{limit}</MaxKeys>"
            f"<IsTruncated>{'true' if more else 'false'}</IsTruncated>"
            f"{'<EncodingType>url</EncodingType>' if encode else ''}{contents}{commons}{token_xml}"
            "</ListBucketResult>"
        )
        return web.Response(body=xml.encode(), content_type="application/xml")

    async def obj(request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        i = bisect.bisect_left(keys, key)
        if i == len(keys) or keys[i] != key:
            return web.Response(
                status=404,
                body=b"<Error><Code>NoSuchKey</Code></Error>",
                content_type="application/xml",
            )
        headers = {"ETag": f'"{etag(key)}"', "Last-Modified": MODIFIED, "Accept-Ranges": "bytes"}
        body = body_of(key)
        if request.method == "HEAD":
            return web.Response(headers={**headers, "Content-Length": "1"})
        return web.Response(body=body, headers=headers, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_route("GET", f"/{BUCKET}", bucket)
    app.router.add_route("HEAD", f"/{BUCKET}", lambda _: web.Response())
    app.router.add_route("*", f"/{BUCKET}/{{key:.+}}", obj)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    Path(port_file).write_text(str(sock.getsockname()[1]))
    web.run_app(app, sock=sock, print=None, access_log=None)


def measure(argv: list[str], env: dict[str, str]) -> tuple[float, float, float, str]:
    """(wall s, CPU s, peak RSS MiB, stdout tail) of one run.

    Output goes to files, not pipes: a pipe read every poll holds a tool
    that prints 200,000 lines (ls, a dry run) to 64 KiB a poll.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, _vm_hwm_kib(proc.pid))
            time.sleep(0.02)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            err.seek(0)
            sys.exit(f"{argv[0]} failed ({proc.returncode}): {err.read()[-2000:]!r}")
        out.seek(max(0, out.seek(0, os.SEEK_END) - 4096))
        tail = out.read()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, peak / 1024, tail.decode(errors="replace")


def check(
    run: str, measured: tuple[float, float, float, str], count: int
) -> tuple[float, float, float]:
    """(wall, CPU, RSS) of a run whose output says it did what it should."""
    wall, cpu, rss, out = measured
    if run == "ls":
        assert out.count("\n") > 0
    elif run in ("first", "rerun"):
        document = json.loads(out[out.index("{") :])
        want = ("downloaded", count) if run == "first" else ("skipped", count)
        if document[want[0]] != want[1]:
            sys.exit(f"{run}: {document}")
    else:
        summary = json.loads(out.strip().splitlines()[-1])
        if summary["plan"]["download"] != count:
            sys.exit(f"dry run planned {summary['plan']}")
    return wall, cpu, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=200_000)
    parser.add_argument(
        "--download-keys",
        type=int,
        default=20_000,
        help="keys for the first download and the rerun (a separate prefix set)",
    )
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--runs", type=int, default=3, help="runs of each but the first download")
    parser.add_argument("--s5cmd", default=str(ROOT / ".venv-bench" / "bin" / "s5cmd"))
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), float(args.serve[1]), args.serve[2])
        return

    ours = str(Path(sys.executable).parent / "icanhazmodel")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/tmp",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    print(
        f"{os.cpu_count()} cores; {args.delay_ms:.0f} ms per list page; one-byte objects "
        "in 1,000 folders"
    )
    print(f"median of {args.runs} runs (min-max wall); the first download once")
    print("| keys | run | wall s | CPU s | CPU ms/key | peak RSS MiB | ÷ s5cmd ls |")
    print("|---|---|---|---|---|---|---|")
    for count, runs in ((args.keys, ("ls", "dry")), (args.download_keys, ("ls", "first", "rerun"))):
        with tempfile.TemporaryDirectory(prefix="listbench-") as tmp:
            port_file = Path(tmp) / "port"
            server = subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--serve",
                    str(count),
                    str(args.delay_ms),
                    str(port_file),
                ]
            )
            try:
                while not port_file.exists() or not port_file.read_text():
                    time.sleep(0.05)
                time.sleep(0.3)
                endpoint = f"http://127.0.0.1:{port_file.read_text()}"
                dest = Path(tmp) / "ptms"
                ours_argv = [
                    ours,
                    "-b",
                    BUCKET,
                    "-k",
                    "wide",
                    "-m",
                    str(dest),
                    "--endpoint-url",
                    endpoint,
                    "--no-progress",
                ]
                argv = {
                    "ls": [args.s5cmd, "--endpoint-url", endpoint, "ls", f"s3://{BUCKET}/wide/*"],
                    "dry": [*ours_argv, "--dry-run", "--json"],
                    "first": [*ours_argv, "--json"],
                    "rerun": [*ours_argv, "--json"],
                }
                base = None
                for run in runs:
                    # The first download happens once (the rerun needs it); the
                    # rest are repeated, and the median run (by wall) reported.
                    samples = [
                        check(run, measure(argv[run], env), count)
                        for _ in range(1 if run == "first" else args.runs)
                    ]
                    wall, cpu, rss = sorted(samples)[len(samples) // 2]
                    spread = (
                        f" ({min(samples)[0]:.2f}-{max(samples)[0]:.2f})"
                        if len(samples) > 1
                        else ""
                    )
                    base = wall if run == "ls" else base
                    name = {
                        "ls": "s5cmd ls",
                        "dry": "icanhazmodel --dry-run --json",
                        "first": "icanhazmodel, first download",
                        "rerun": "icanhazmodel, rerun (all unchanged)",
                    }[run]
                    ratio = f"{wall / base:.2f}" if base else ""
                    print(
                        f"| {count:,} | {name} | {wall:.2f}{spread} | {cpu:.2f} "
                        f"| {cpu / count * 1000:.3f} | {rss:.0f} | {ratio} |",
                        flush=True,
                    )
                shutil.rmtree(dest, ignore_errors=True)
            finally:
                server.terminate()
                server.wait()


if __name__ == "__main__":
    main()
