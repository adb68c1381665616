"""The command line: parse, build the config, run, turn errors into exit codes."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from ._asof import parse_at
from ._config import (
    DEFAULT_CONCURRENCY,
    MAX_CONCURRENCY,
    FetchConfig,
    locked_source,
    parse_concurrency,
    parse_processes,
    split_s3_url,
)
from ._errors import IcanhazmodelError, ProfileNotFound, UsageError
from ._lock import read_lock
from ._models import FetchResult, PlannedObject
from ._output import (
    dumps,
    error_document,
    manifest_line,
    plan_line,
    plan_totals,
    planned_document,
    problem_lines,
    result_document,
    summary_line,
    verification_line,
)
from ._progress import LineReporter, MessageReporter, NullReporter, Reporter, TqdmReporter
from ._runner import fork_server_for, run
from ._select import Filters, parse_shard
from ._version import __version__

if TYPE_CHECKING:
    from ._launch import ForkServer

EXIT_OK = 0
EXIT_INCOMPLETE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
ENV_PREFIX = "ICANHAZMODEL"

_HELP = """\
Download pretrained models (or any files) from S3 to local disk.

Every object under the S3 key MODEL_KEY is written to MODEL_DIR/<its key>,
so a file is found on disk at the same path as its key. If MODEL_KEY is
itself an object, just that object is downloaded. Files are checked
against S3's checksum before they land; running again skips what has not
changed and resumes what was interrupted.

\b
Examples:
  icanhazmodel --profile kevin-digitalreasoning --bucket my-models \\
      --model_key conduct/secrecy/en/version_1.2
  icanhazmodel s3://my-models/bert/base --include '*.json' --dry-run

Every option can also be set in the environment: ICANHAZMODEL_<OPTION>,
e.g. ICANHAZMODEL_MODEL_DIR=/data/ptms.

Exit status: 0 when every object landed, 1 when some were refused or
failed (each is named on stderr) or the run failed, 2 for a usage or
configuration error, 130 when interrupted.
"""


class _Option(click.Option):
    """Every option shows the environment variable that sets it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("show_envvar", True)
        super().__init__(*args, **kwargs)


def _fail(message: str, code: int, json_context: dict[str, Any] | None = None) -> NoReturn:
    sys.stdout.flush()  # a dry run's lines before the error
    if json_context is not None:
        # A dry run's JSON is JSON Lines: its error is one line too.
        one_line = bool(json_context.get("dry_run"))
        click.echo(dumps(error_document(message, code, **json_context), one_line=one_line))
    click.echo(f"icanhazmodel: error: {message}", err=True)
    sys.exit(code)


# Options of aws s3, s5cmd and huggingface-cli that people type here by habit,
# with what to do instead.
_HABITS = {
    "--recursive": "icanhazmodel always fetches everything under the key; drop --recursive",
    "-r": "icanhazmodel always fetches everything under the key; drop -r",
    "--endpoint": "the option is --endpoint-url",
    "--numworkers": "requests in flight are -j/--concurrency; processes are -P/--processes",
    "--local-dir": "the directory is -m/--model_dir",
    "--cache-dir": "the directory is -m/--model_dir",
    "--dryrun": "the option is --dry-run",
    "--no-progress-bar": "the option is --no-progress",
    "--only-show-errors": "the option is -q/--quiet",
}


def _no_such_option(exc: click.NoSuchOption) -> str:
    habit = _HABITS.get(exc.option_name)
    if habit is not None:
        return f"no such option: {exc.option_name} ({habit})"
    return f"{exc.format_message()} (see --help)"


class _OneLineErrors(click.Command):
    """Click's usage errors, but as one line (the culprit and where to look)."""

    def main(  # type: ignore[override]
        self, args: Sequence[str] | None = None, prog_name: str | None = None, **extra: Any
    ) -> Any:
        try:
            return super().main(
                args, prog_name, standalone_mode=False, auto_envvar_prefix=ENV_PREFIX, **extra
            )
        except click.NoSuchOption as exc:
            _fail(_no_such_option(exc), EXIT_USAGE)
        except click.UsageError as exc:
            _fail(f"{exc.format_message()} (see --help)", EXIT_USAGE)
        except click.exceptions.Abort:
            _fail("aborted", EXIT_INTERRUPTED)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)


def _choose_reporter(progress: bool | None, quiet: bool) -> Reporter:
    if quiet:
        return NullReporter()
    if progress is None:
        # A terminal gets bars; a log (CI, a pipe) a plain line now and then.
        return TqdmReporter() if sys.stderr.isatty() else LineReporter()
    return TqdmReporter() if progress else MessageReporter()


def _bucket_and_key(bucket: str | None, model_key: str) -> tuple[str, str]:
    url = split_s3_url(model_key)
    if url is None:
        if not model_key:
            raise UsageError(
                "--model_key must not be empty (for a whole bucket, pass -k s3://BUCKET/)"
            )
        return bucket or "", model_key
    url_bucket, key = url
    if bucket and bucket != url_bucket:
        raise UsageError(f"--bucket '{bucket}' disagrees with the bucket in '{model_key}'")
    return url_bucket, key


def _model_key(flag: str | None, positional: str | None) -> str:
    """-k KEY, or the key as aws and s5cmd take it: an argument."""
    if flag is not None and positional is not None and flag != positional:
        raise UsageError(f"two keys given: -k '{flag}' and '{positional}'; give one")
    key = flag if flag is not None else positional
    if key is None:
        raise UsageError("no key given: pass -k/--model_key KEY with -b BUCKET, or s3://BUCKET/KEY")
    return key


def _build_config(**options: Any) -> FetchConfig:
    lock = read_lock(options["from_lock"]) if options["from_lock"] else None
    if lock is not None:
        bucket, key = locked_source(
            lock, options["bucket"], options["model_key"] or options["source"]
        )
    else:
        model_key = _model_key(options["model_key"], options["source"])
        bucket, key = _bucket_and_key(options["bucket"], model_key)
    return FetchConfig(
        bucket=bucket,
        key=key,
        dest=Path(options["model_dir"]),
        profile=options["profile"],
        endpoint_url=options["endpoint_url"],
        region=options["region"],
        concurrency=parse_concurrency(options["concurrency"]),
        processes=parse_processes(options["processes"]),
        retries=options["retries"],
        stall_timeout=options["stall_timeout"],
        verify=options["verify"],
        verify_ssl=options["verify_ssl"],
        ca_bundle=options["ca_bundle"],
        force=options["force"],
        filters=Filters(tuple(options["include"]), tuple(options["exclude"])),
        shard=parse_shard(options["shard"]) if options["shard"] else parse_shard("0/1"),
        dry_run=options["dry_run"],
        unsigned=options["no_sign_request"],
        request_payer=options["request_payer"],
        version_id=options["version_id"],
        ignore_space=options["ignore_space"],
        lock=Path(options["lock"]) if options["lock"] else None,
        from_lock=lock,
        at=parse_at(options["at"]) if options["at"] else None,
    )


class _PlanPrinter:
    """Prints each planned object the moment it is decided (a million-key
    dry run never holds its plan): a line for people, a JSON Lines record for
    programs.

    Lines go out a batch at a time, not through click.echo (it flushes every
    line) nor a write per line: under PYTHONUNBUFFERED (common in container
    images) every sys.stdout.write is a write(2), 10 us a key.
    """

    BATCH = 512

    def __init__(self, json_out: bool) -> None:
        self._line: Callable[[PlannedObject], str] = (
            (lambda o: dumps(planned_document(o), one_line=True)) if json_out else plan_line
        )
        self._lines: list[str] = []

    def __call__(self, o: PlannedObject) -> None:
        self._lines.append(self._line(o))
        if len(self._lines) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        if self._lines:
            sys.stdout.write("\n".join(self._lines) + "\n")
            self._lines.clear()
        sys.stdout.flush()


async def _run_until_terminated(
    terminated: list[bool],
    config: FetchConfig,
    reporter: Reporter,
    printer: Callable[[PlannedObject], None] | None,
    forks: ForkServer | None,
) -> FetchResult:
    """The run, cancelled on SIGTERM as Ctrl-C cancels it (see main)."""
    import asyncio

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None

    def on_sigterm() -> None:
        terminated.append(True)
        task.cancel()

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    try:
        return await run(config, reporter, None, printer, forks)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _cancelled(exc: BaseException) -> bool:
    """Whether *exc* is asyncio's CancelledError (asyncio is not imported
    until the run starts, and a Ctrl-C may come before)."""
    asyncio = sys.modules.get("asyncio")
    return asyncio is not None and isinstance(exc, asyncio.CancelledError)


def _report(result: FetchResult, config: FetchConfig, *, json_out: bool, quiet: bool) -> None:
    sys.stdout.flush()  # the plan's lines first
    if json_out:
        document = result_document(result, **_json_context(config))
        click.echo(dumps(document, one_line=config.dry_run))
    elif result.plan is not None:
        for o in result.plan.objects:  # none where they were printed as planned
            click.echo(plan_line(o))
    if quiet:
        # Errors only: the problems (not told as they happened), no summary.
        for line in problem_lines(result):
            click.echo(line, err=True)
        return
    if result.plan is not None:
        # Beside a real run's summary, on stderr: stdout holds only the plan,
        # a line per object, for the pipe that reads it.
        for line in plan_totals(result.plan):
            click.echo(line, err=True)
    else:
        # Last, so that it is what a terminal shows once the run is over;
        # the problems were told as they happened (see LIVE_PROBLEMS).
        click.echo(summary_line(result), err=True)
        if line := verification_line(result):
            click.echo(line, err=True)
    if result.manifest_error:
        click.echo(manifest_line(result.manifest_error), err=True)


def _with_hint(exc: IcanhazmodelError, options: dict[str, Any]) -> str:
    profile = options["profile"]
    if isinstance(exc, ProfileNotFound) and profile and (profile.isdigit() or profile == "auto"):
        return f"{exc} (worker processes are -P/--processes; -p is --profile)"
    return str(exc)


def _json_context(config: FetchConfig) -> dict[str, Any]:
    return {
        "bucket": config.bucket,
        "key": config.key,
        "model_dir": str(config.dest),
        "dry_run": config.dry_run,
        "shard": str(config.shard),
    }


@click.command(
    cls=_OneLineErrors,
    help=_HELP,
    context_settings={"max_content_width": 100, "help_option_names": ["-h", "--help"]},
)
@click.argument("source", metavar="[s3://BUCKET/KEY]", required=False)
@click.option(
    "-k",
    "--model_key",
    "--model-key",
    "model_key",
    cls=_Option,
    help="Key of one object, or the prefix to mirror; or s3://BUCKET/KEY for both at once "
    "(which may also be given as the argument).",
)
@click.option("-b", "--bucket", cls=_Option, help="S3 bucket holding the models.")
@click.option(
    "-m",
    "--model_dir",
    "--model-dir",
    "model_dir",
    cls=_Option,
    default="ptms",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Directory the keys are mirrored under.",
)
@click.option(
    "-p",
    "--profile",
    cls=_Option,
    help="AWS profile (default: AWS_PROFILE, env keys, default profile).",
)
@click.option(
    "--include",
    cls=_Option,
    multiple=True,
    metavar="GLOB",
    help="Only keys matching GLOB (relative to the key; '*' crosses '/'; the base name "
    "is tried too). Repeatable.",
)
@click.option(
    "--exclude",
    cls=_Option,
    multiple=True,
    metavar="GLOB",
    help="Skip keys matching GLOB; wins over --include. Repeatable.",
)
@click.option(
    "--dry-run",
    cls=_Option,
    is_flag=True,
    help="Print what would be downloaded, skipped or refused; write nothing.",
)
@click.option(
    "--json",
    "json_out",
    cls=_Option,
    envvar=f"{ENV_PREFIX}_JSON",
    is_flag=True,
    help="Print one JSON document on stdout at the end (the plan, with --dry-run).",
)
@click.option(
    "--shard",
    cls=_Option,
    metavar="K/N|auto",
    help="Fetch only shard K of N (0-based) of the listing; 'auto' reads torchrun, MPI, "
    "Slurm or Kubernetes variables.",
)
@click.option(
    "--endpoint-url",
    cls=_Option,
    help="S3-compatible endpoint (MinIO, Ceph, a local server). "
    "Default: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, else AWS.",
)
@click.option("--region", cls=_Option, help="AWS region of the bucket (default: the profile's).")
@click.option(
    "--no-sign-request",
    cls=_Option,
    is_flag=True,
    help="Send requests unsigned, for public buckets (no credentials needed).",
)
@click.option(
    "--request-payer",
    cls=_Option,
    type=click.Choice(["requester"]),
    help="Confirm that you pay for requests to a requester-pays bucket.",
)
@click.option(
    "--version-id",
    cls=_Option,
    help="Fetch this version of the object named exactly by --model_key.",
)
@click.option(
    "--at",
    cls=_Option,
    metavar="TIME",
    help="Fetch the key as it was at TIME (RFC 3339, or a date: its first second, UTC): "
    "each object's newest version then, leaving out what was deleted. Needs a versioned bucket.",
)
@click.option(
    "--lock",
    cls=_Option,
    metavar="FILE",
    help="At the end, write FILE: every file this run stands for (key, path, size, ETag, "
    "version, checksum), to fetch exactly them again with --from-lock. A dry run writes "
    "what it would fetch.",
)
@click.option(
    "--from-lock",
    cls=_Option,
    metavar="FILE",
    help="Fetch exactly the objects a --lock FILE names (by version id, else by ETag); "
    "fail, naming each, any that S3 no longer holds in that form.",
)
@click.option(
    "-j",
    "--concurrency",
    cls=_Option,
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    metavar="N|auto",
    help="Requests in flight at once in each process, shared by all files and parts; "
    "auto: found as the run goes (32 up to 256, fewer when S3 throttles); "
    f"N: fixed (1-{MAX_CONCURRENCY}).",
)
@click.option(
    "-P",
    "--processes",
    cls=_Option,
    default="auto",
    show_default=True,
    metavar="N|auto",
    help="Worker processes sharing the downloads; auto: one per usable CPU but one, "
    "when the listing has work enough for them; 1: all in this process.",
)
@click.option(
    "--retries",
    cls=_Option,
    type=click.IntRange(0, 100),
    default=5,
    show_default=True,
    help="Further attempts for a request that fails, and resumes of a download that "
    "breaks, before giving up on it (throttling is retried for a minute besides).",
)
@click.option(
    "--stall-timeout",
    cls=_Option,
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Seconds without a byte before a transfer is dropped and retried.",
)
@click.option(
    "--verify/--no-verify",
    cls=_Option,
    default=True,
    show_default=True,
    help="Check each file's content against S3's checksum (or MD5 ETag) before it "
    "lands. (Not TLS: see --no-verify-ssl.)",
)
@click.option(
    "--no-verify-ssl",
    "verify_ssl",
    cls=_Option,
    envvar=f"{ENV_PREFIX}_NO_VERIFY_SSL",
    flag_value=False,
    default=True,
    help="Do not check the endpoint's TLS certificate (insecure: anyone on the network "
    "path could serve the files).",
)
@click.option(
    "--ca-bundle",
    cls=_Option,
    metavar="PATH",
    help="PEM file of the CAs trusted for TLS (default: AWS_CA_BUNDLE, the profile's "
    "ca_bundle, else certifi's bundle).",
)
@click.option(
    "--force",
    cls=_Option,
    is_flag=True,
    help="Download everything again, replacing files changed locally.",
)
@click.option(
    "--ignore-space",
    cls=_Option,
    is_flag=True,
    help="Do not stop when the listed objects exceed the free disk space.",
)
@click.option(
    "--progress/--no-progress",
    cls=_Option,
    default=None,
    help="Progress bars on stderr (default: bars on a terminal, a line every 5 s otherwise).",
)
@click.option("-q", "--quiet", cls=_Option, is_flag=True, help="Print nothing but errors.")
@click.version_option(__version__, "--version", prog_name="icanhazmodel")
def main(**options: Any) -> None:
    json_out: bool = options["json_out"]
    try:
        config = _build_config(**options)
    except IcanhazmodelError as exc:
        _fail(str(exc), exc.exit_code, {} if json_out else None)
    context = _json_context(config) if json_out else None
    reporter = _choose_reporter(options["progress"], options["quiet"])
    # SIGTERM (kill, Kubernetes stopping a pod) stops the run like Ctrl-C:
    # workers cancelled, big temp files kept for the next run, the rest
    # removed. Until the run's loop takes it over, it interrupts at once.
    # Never by way of SIGINT: a script's background job inherits SIGINT
    # ignored, and SIGTERM must stop it all the same.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    forks = None
    printer = _PlanPrinter(json_out) if config.dry_run else None
    terminated: list[bool] = []
    try:
        try:
            # Before the event loop's imports (~35 ms): the run's workers, if
            # it wants them, are ready that much sooner.
            forks = fork_server_for(config)
            # Here, not at the top: --help and --version need none of these.
            import anyio

            result = anyio.run(_run_until_terminated, terminated, config, reporter, printer, forks)
        finally:
            if forks is not None:
                forks.close()  # closed by the run already, unless it never began
            if printer is not None:
                printer.flush()  # the plan so far, before the totals or an error
    except IcanhazmodelError as exc:
        reporter.close()
        _fail(_with_hint(exc, options), exc.exit_code, context)
    except BaseException as exc:
        # A SIGTERM cancels the run's task (see _run_until_terminated).
        if not isinstance(exc, KeyboardInterrupt) and not (terminated and _cancelled(exc)):
            raise
        if isinstance(reporter, TqdmReporter):
            reporter.close(interrupted=True)
        else:
            reporter.close()
        _fail("interrupted; run the same command again to resume", EXIT_INTERRUPTED, context)
    reporter.close()
    _report(result, config, json_out=json_out, quiet=options["quiet"])
    sys.exit(EXIT_OK if result.ok else EXIT_INCOMPLETE)


def entry() -> NoReturn:
    """The console script and ``python -m icanhazmodel``: :func:`main`, then
    leave without Python's teardown.

    Freeing ~400 modules and their objects took ~35 ms at every exit, a
    tenth of fetching one small file. By then the run has closed everything
    it opened (files, the manifest, the fork server), and the output is
    flushed here, so nothing is lost.
    """
    try:
        main()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)  # what sys.exit("...") does
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing to lose
            stream.flush()
    os._exit(code or 0)
