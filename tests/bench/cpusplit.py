"""CPU of one icanhazmodel run, split between the parent and its worker processes.

    python tests/bench/cpusplit.py -- -b BUCKET -k PREFIX -m DIR --endpoint-url URL -P 2

Runs the command line in this process and, as it leaves, prints one JSON
line: wall seconds, the parent's CPU seconds (user + system) and its
children's (the fork server and the workers it forked and waited for), and
peak RSS of each. With the objects and bytes fetched (from ``--json``, which
this adds), CPU per object and per GiB follow. A benchmark's instrument,
not a test.
"""

from __future__ import annotations

import io
import json
import os
import resource
import sys
import time
from contextlib import redirect_stdout


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["--"]:
        args = args[1:]
    from icanhazmodel import _cli

    started = time.perf_counter()
    captured = io.StringIO()
    real_exit = os._exit

    def report(code: int) -> None:
        wall = time.perf_counter() - started
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            result = json.loads(captured.getvalue())
        except ValueError:
            result = {}
        objects = result.get("downloaded", 0)
        gib = result.get("bytes_downloaded", 0) / (1 << 30)
        parent = me.ru_utime + me.ru_stime
        workers = kids.ru_utime + kids.ru_stime
        line = {
            "exit": code,
            "wall_s": round(wall, 3),
            "objects": objects,
            "gib": round(gib, 3),
            "processes": result.get("processes"),
            "in_flight_peak": result.get("in_flight_peak"),
            "parent_cpu_s": round(parent, 3),
            "workers_cpu_s": round(workers, 3),
            "parent_rss_mib": round(me.ru_maxrss / 1024, 1),
            "worker_rss_mib": round(kids.ru_maxrss / 1024, 1),
        }
        if objects:
            line["cpu_ms_per_object"] = round((parent + workers) * 1000 / objects, 3)
        if gib:
            line["cpu_s_per_gib"] = round((parent + workers) / gib, 3)
        sys.__stdout__.write(json.dumps(line) + "\n")
        sys.__stdout__.flush()
        real_exit(code)

    os._exit = report  # type: ignore[assignment]  # the CLI leaves by os._exit
    sys.argv = ["icanhazmodel", *args, "--json"]
    with redirect_stdout(captured):
        _cli.entry()


if __name__ == "__main__":
    main()
