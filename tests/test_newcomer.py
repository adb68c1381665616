"""A newcomer's first hour (#24): the messages, counts and screens someone new
meets first, each held to what it should say."""

from __future__ import annotations

import asyncio
import http.server
import io
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import icanhazmodel
from icanhazmodel._progress import NullReporter, TqdmReporter
from tests.conftest import Bucket, CliResult, run_cli
from tests.faultproxy import Fault, fault_proxy
from tests.test_errors import assert_one_line_error

MiB = 1 << 20


def _cli(bucket: Bucket, *args: str, endpoint: str | None = None) -> CliResult:
    return run_cli("-b", bucket.name, "--endpoint-url", endpoint or bucket.endpoint, *args)


# -- 3. a profile named by AWS_PROFILE -------------------------------------------------------


def test_a_missing_profile_from_aws_profile_is_named_with_where_it_came_from(
    bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_PROFILE", "ghost")
    result = _cli(bucket, "-k", "p", "-m", str(tmp_path))
    assert_one_line_error(result, 2, "'ghost' (from AWS_PROFILE)", "not found")
    assert "None" not in result.stderr
    with pytest.raises(icanhazmodel.ProfileNotFound, match=r"'ghost' \(from AWS_PROFILE\)"):
        asyncio.run(
            icanhazmodel.fetch(
                bucket=bucket.name, key="p", dest=tmp_path, endpoint_url=bucket.endpoint
            )
        )


# -- 4, 10. what aws and s5cmd users type -------------------------------------------------


def test_no_bucket_points_at_the_s3_url_form(tmp_path: Path) -> None:
    result = run_cli("-k", "conduct/secrecy/en/version_1.2", "-m", str(tmp_path))
    assert_one_line_error(result, 2, "no bucket given", "s3://BUCKET/KEY")


def test_the_key_may_be_given_as_aws_and_s5cmd_take_it(bucket: Bucket, tmp_path: Path) -> None:
    bucket.put("p/a.txt", b"alpha")
    result = run_cli(
        f"s3://{bucket.name}/p", "--endpoint-url", bucket.endpoint, "-m", str(tmp_path)
    )
    assert result.code == 0, result.stderr
    assert (tmp_path / "p/a.txt").read_bytes() == b"alpha"
    clash = run_cli(f"s3://{bucket.name}/p", "-k", "q", "-m", str(tmp_path))
    assert_one_line_error(clash, 2, "two keys given")
    assert_one_line_error(run_cli("-m", str(tmp_path)), 2, "no key given", "s3://BUCKET/KEY")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--recursive"], "always fetches everything under the key"),
        (["--endpoint", "http://127.0.0.1:9"], "--endpoint-url"),
        (["--local-dir", "x"], "-m/--model_dir"),
    ],
)
def test_habits_from_other_tools_get_a_pointer(args: list[str], needle: str) -> None:
    result = run_cli("s3://b/k", *args)
    assert_one_line_error(result, 2, "no such option", needle)


def test_dash_h_is_help() -> None:
    result = run_cli("-h")
    assert result.code == 0
    assert result.stdout.startswith("Usage: icanhazmodel")


def test_a_process_count_given_to_dash_p_is_pointed_at_dash_capital_p(
    bucket: Bucket, tmp_path: Path
) -> None:
    result = _cli(bucket, "-p", "2", "-k", "p", "-m", str(tmp_path))
    assert_one_line_error(result, 2, "AWS profile '2' not found", "-P/--processes")


# -- 5, 22. problems told once, capped, before the summary; -q prints only errors -------------


def _refusals(bucket: Bucket, count: int) -> None:
    bucket.put_many({f"p/bad\\{i:03d}": b"x" for i in range(count)} | {"p/good": b"good"})


def test_problems_are_told_once_and_capped_and_the_summary_is_last(
    bucket: Bucket, tmp_path: Path
) -> None:
    _refusals(bucket, 45)
    result = _cli(bucket, "-k", "p", "-m", str(tmp_path), "--no-progress")
    assert result.code == 1
    lines = result.stderr.strip().splitlines()
    told = [line for line in lines if line.startswith("refused: ")]
    assert len(told) == 20
    assert len(set(told)) == 20  # each once
    assert sum("more than 20 problems" in line for line in lines) == 1
    assert lines[-2].startswith("1 file downloaded (4 B)")
    assert "45 refused" in lines[-2]
    assert lines[-1].startswith("verified:")


def test_quiet_prints_the_problems_and_nothing_else(bucket: Bucket, tmp_path: Path) -> None:
    _refusals(bucket, 3)
    result = _cli(bucket, "-k", "p", "-m", str(tmp_path), "-q")
    assert result.code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3
    assert all(line.startswith("refused: ") for line in lines)
    assert result.stdout == ""


def test_a_dry_run_keeps_stdout_for_the_plan(bucket: Bucket, tmp_path: Path) -> None:
    bucket.put_many({"p/a": b"a", "p/b": b"bb"})
    result = _cli(bucket, "-k", "p", "-m", str(tmp_path), "--dry-run")
    assert result.code == 0
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["download", "download"]
    assert "would download 2 files (3 B)" in result.stderr


# -- 9. a 403 on an object -----------------------------------------------------------------


@pytest.mark.usefixtures("request_path")
@pytest.mark.parametrize("code", ["AccessDenied", ""])
def test_a_denied_object_says_access_denied_once(bucket: Bucket, tmp_path: Path, code: str) -> None:
    bucket.put_many({"p/secret": b"s", "p/open": b"o"})
    with fault_proxy(bucket.endpoint) as proxy:
        proxy.add(Fault(key_contains="p/secret", error=(403, code), times=100))
        result = _cli(bucket, "-k", "p", "-m", str(tmp_path), endpoint=proxy.endpoint)
    assert result.code == 1
    [line] = [line for line in result.stderr.splitlines() if "p/secret" in line]
    assert "access denied" in line
    assert "--profile" in line
    assert "S3 error 403: S3 error 403" not in result.stderr


# -- 16, 18. counts a person reads ---------------------------------------------------------


def test_the_summary_counts_like_a_person(bucket: Bucket, tmp_path: Path) -> None:
    bucket.put("p/one.yaml", b"x" * 328)
    first = _cli(bucket, "-k", "p", "-m", str(tmp_path), "--no-progress")
    assert first.code == 0
    assert first.stderr.startswith("1 file downloaded (328 B) in "), first.stderr
    again = _cli(bucket, "-k", "p", "-m", str(tmp_path), "--no-progress")
    assert again.code == 0
    summary = again.stderr.splitlines()[0]
    assert summary.startswith("nothing downloaded, 1 unchanged in "), summary
    assert "/s" not in summary  # no speed for no bytes


# -- 20. the locally-modified hint ---------------------------------------------------------


def test_an_edited_file_says_how_to_get_s3s_copy(bucket: Bucket, tmp_path: Path) -> None:
    bucket.put("p/a", b"a")
    assert _cli(bucket, "-k", "p", "-m", str(tmp_path)).code == 0
    (tmp_path / "p/a").write_bytes(b"my edit")
    result = _cli(bucket, "-k", "p", "-m", str(tmp_path), "--no-progress")
    assert result.code == 1
    assert "delete it to fetch S3's copy" in result.stderr
    assert "--force to download every file again" in result.stderr


# -- 21. the library speaks in keywords ----------------------------------------------------


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"concurrency": 0}, "concurrency= must be"),
        ({"processes": "many"}, "processes= must be"),
        ({"shard": "9"}, "shard= '9'"),
        ({"retries": -1}, "retries= must be"),
    ],
)
def test_library_errors_name_keywords_not_flags(
    tmp_path: Path, options: dict[str, object], needle: str
) -> None:
    with pytest.raises(icanhazmodel.UsageError) as caught:
        asyncio.run(icanhazmodel.fetch(bucket="b", key="k", dest=tmp_path, **options))  # type: ignore[arg-type]
    assert needle in str(caught.value)
    assert "--" not in str(caught.value)


# -- 8. mypy finds the installed package -----------------------------------------------------


def test_mypy_finds_the_installed_package_from_anywhere(tmp_path: Path) -> None:
    """What `make` installs must be visible to mypy in a user's own project."""
    script = tmp_path / "mine.py"
    script.write_text(
        "import icanhazmodel\n\n"
        "def downloaded(r: icanhazmodel.FetchResult) -> int:\n"
        "    return r.downloaded\n"
    )
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


# -- 2, 12. README's library snippets type-check under mypy --strict ------------------------

# What a reader carries from the first snippet, and the helpers they stand for.
_PREAMBLE = """\
from pathlib import Path

import icanhazmodel

async def tokenize(path: Path) -> None: ...
def upload_elsewhere(path: Path) -> None: ...
"""


def _readme_snippets() -> list[str]:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    # The PyTorch example needs torch, which the test extra does not carry.
    return [block for block in blocks if "torch" not in block]


def test_readme_library_snippets_pass_mypy_strict(tmp_path: Path) -> None:
    snippets = _readme_snippets()
    assert len(snippets) >= 3
    for number, block in enumerate(snippets):
        body = block
        if "await" in block or "async " in block:  # top-level await: wrap it as a user would
            body = "async def main() -> None:\n" + textwrap.indent(block, "    ")
        (tmp_path / f"snippet_{number}.py").write_text(_PREAMBLE + body)
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


# -- 7, 19. an endpoint that is down, or is not S3; a version of a prefix --------------------


@pytest.mark.usefixtures("request_path")
def test_an_endpoint_that_is_down_is_said_within_seconds(tmp_path: Path) -> None:
    # Bound but not listening: connections are refused, and no other test's
    # server can take the port meanwhile and meet this run's retries.
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        started = time.monotonic()
        result = run_cli(
            "s3://b/k", "--endpoint-url", f"http://127.0.0.1:{port}", "-m", str(tmp_path)
        )
    assert time.monotonic() - started < 10
    assert_one_line_error(result, 1, "cannot reach the S3 endpoint", f"127.0.0.1:{port}")


@pytest.mark.usefixtures("request_path")
def test_a_web_server_that_is_not_s3_is_named_as_such(tmp_path: Path) -> None:
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        do_HEAD = do_GET

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        result = run_cli("s3://b/k", "--endpoint-url", endpoint, "-m", str(tmp_path))
    finally:
        server.shutdown()
        server.server_close()
    assert_one_line_error(result, 1, f"{endpoint} answered HTTP 404", "is it an S3 endpoint?")
    assert "max retries" not in result.stderr


@pytest.mark.usefixtures("request_path")
def test_a_version_id_for_a_prefix_says_it_needs_one_object(bucket: Bucket, tmp_path: Path) -> None:
    bucket.put("p/a", b"a")
    result = _cli(bucket, "-k", "p", "--version-id", "3HL4kqtJlcpXroDTDmJ", "-m", str(tmp_path))
    assert result.code != 0
    assert "Traceback" not in result.stderr
    assert "--version-id" in result.stderr
    assert "400 Bad Request" not in result.stderr


# -- 6. a folder that cannot be written ------------------------------------------------------


def test_an_unwritable_folder_is_named_not_a_temp_file(bucket: Bucket, tmp_path: Path) -> None:
    from tests.test_hardening import immutable

    bucket.put_many({"p/ok": b"ok", **{f"p/sub/f{i}.bin": b"x" * 100 for i in range(3)}})
    folder = tmp_path / "p" / "sub"
    folder.mkdir(parents=True)
    with immutable(folder):
        result = _cli(bucket, "-k", "p", "-m", str(tmp_path), "--no-progress")
    assert result.code == 1
    failed = [line for line in result.stderr.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 3, result.stderr
    assert all(f"writing in folder '{folder}'" in line for line in failed), failed
    assert "icanhazmodel-partial" not in result.stderr
    assert (tmp_path / "p/ok").read_bytes() == b"ok"


# -- 14, 15, 17. the bars -------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _bars(columns: int) -> tuple[TqdmReporter, _Terminal]:
    screen = _Terminal()
    reporter = TqdmReporter(screen)
    reporter._total.dynamic_ncols = lambda _: (columns, 24)
    reporter.listed(403, 26 * MiB)
    reporter.listing_done()
    reporter.advanced("k", 5 * MiB)
    return reporter, screen


def test_a_wide_bar_speaks_the_summarys_units_and_holds_its_eta_until_it_means_something() -> None:
    reporter, _ = _bars(200)
    line = str(reporter._total)
    assert "5.0MiB/26.0MiB" in line
    assert "MB" not in line.replace("MiB", "")
    assert "ETA --:--" in line  # not an hours-long guess from the first moment
    assert "0/403 files" in line
    reporter.close()


def test_a_narrow_bar_keeps_counts_and_whole_sizes() -> None:
    reporter, _ = _bars(40)
    line = str(reporter._total)
    assert line == " 19% 5.0MiB/26.0MiB, 0/403 files"
    assert len(line) <= 40
    key = "conduct/secrecy/en/version_1.2/models/ft/a-very-long-name-of-a-model-file.bin"
    reporter.file_started(key, 20 * MiB)
    bar = reporter._bars[key]
    bar.dynamic_ncols = lambda _: (40, 24)
    reporter.advanced(key, 5 * MiB)
    file_line = str(bar)
    assert len(file_line) <= 40
    assert file_line.endswith("file.bin  25% 5.0MiB/20.0MiB"), file_line
    reporter.close()


def test_a_finished_file_bar_leaves_no_blank_line_between_live_ones() -> None:
    reporter, _ = _bars(120)
    for name in ("a", "b", "c"):
        reporter.file_started(name, 20 * MiB)
    reporter.file_done("b")  # finishes out of order
    lines = {key: abs(bar.pos) for key, bar in reporter._bars.items()}
    assert lines == {"a": 1, "c": 2}
    reporter.file_started("d", 20 * MiB)
    assert abs(reporter._bars["d"].pos) == 3
    reporter.file_done("a")
    assert {key: abs(bar.pos) for key, bar in reporter._bars.items()} == {"c": 1, "d": 2}
    reporter.close()


def test_bytes_resumed_from_disk_fill_the_bar_but_are_not_its_speed() -> None:
    reporter = TqdmReporter(_Terminal())
    bar = reporter._total
    bar.dynamic_ncols = lambda _: (200, 24)
    now = [0.0]
    bar._time = lambda: now[0]
    bar.start_t = bar.last_print_t = 0.0
    reporter.listed(1, 20 * MiB)
    reporter.listing_done()
    now[0] = 1.0
    reporter.resumed("big", 15 * MiB)  # adopted at once from an earlier run's temp file
    now[0] = 2.0
    reporter.advanced("big", MiB)  # one MiB fetched in the two seconds so far
    line = str(bar)
    assert "16.0MiB/20.0MiB" in line
    assert "512.0KiB/s" in line, line
    reporter.close()


def test_an_interrupted_run_takes_its_bar_down() -> None:
    reporter, screen = _bars(120)
    reporter.close(interrupted=True)
    assert screen.getvalue().rsplit("\r", 1)[-1].strip() == ""  # the line left is blank


def test_the_totals_are_whole_as_soon_as_the_last_page_is_listed(
    bucket: Bucket, tmp_path: Path
) -> None:
    """A one-page prefix is listed at once; its bar must not say 'listing'
    while the queue of work drains."""
    bucket.put_many({f"p/{i:03d}": b"x" for i in range(100)})
    calls: list[str] = []

    class Recorder(NullReporter):
        def listing_done(self) -> None:
            calls.append("listing_done")

        def file_started(self, key: str, size: int) -> None:
            calls.append("file_started")

    asyncio.run(
        icanhazmodel.fetch(
            bucket=bucket.name,
            key="p",
            dest=tmp_path,
            endpoint_url=bucket.endpoint,
            concurrency=1,
            processes=1,
            progress=Recorder(),
        )
    )
    assert calls.count("file_started") == 100
    assert calls.index("listing_done") < 5
