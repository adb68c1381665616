"""The command line: parse, build the config, run, turn errors into exit codes."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import click

from ._api import run
from ._config import DEFAULT_CONCURRENCY, FetchConfig
from ._errors import IcanhazmodelError
from ._models import FetchResult
from ._progress import MessageReporter, NullReporter, Reporter, TqdmReporter
from ._version import __version__

EXIT_OK = 0
EXIT_INCOMPLETE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_HELP = """\
Download pretrained models (or any files) from S3 to local disk.

Every object under the S3 key MODEL_KEY is written to MODEL_DIR/<its key>,
so a file is found on disk at the same path as its key. If MODEL_KEY is
itself an object, just that object is downloaded.

\b
Example:
  icanhazmodel --profile kevin-digitalreasoning \\
      --model_key conduct/secrecy/en/version_1.2
writes ./ptms/conduct/secrecy/en/version_1.2/...

Exit status: 0 when every object landed, 1 when some were refused or
failed (each is named on stderr), 2 for a usage or configuration error,
130 when interrupted.
"""


def _fail(message: str, code: int) -> None:
    click.echo(f"icanhazmodel: error: {message}", err=True)
    sys.exit(code)


def _mib(nbytes: int) -> str:
    return f"{nbytes / (1 << 20):.1f} MiB"


def summary_line(result: FetchResult) -> str:
    rate = result.bytes_downloaded / result.seconds / (1 << 20) if result.seconds > 0 else 0.0
    parts = [f"{result.downloaded} files downloaded ({_mib(result.bytes_downloaded)})"]
    if result.folders:
        parts.append(f"{result.folders} folders")
    parts.append(f"{result.skipped} unchanged")
    if result.refused:
        parts.append(f"{result.refused} refused")
    if result.failed:
        parts.append(f"{result.failed} failed")
    return f"{', '.join(parts)} in {result.seconds:.2f} s ({rate:.1f} MiB/s)"


def verification_line(result: FetchResult) -> str:
    levels = ", ".join(f"{count} {level}" for level, count in sorted(result.verification.items()))
    return f"verified: {levels}" if levels else ""


def _print_summary(result: FetchResult) -> None:
    click.echo(summary_line(result), err=True)
    if line := verification_line(result):
        click.echo(line, err=True)
    for problem in result.problems:
        click.echo(f"  {problem.status.value}: {problem.key!r}: {problem.reason}", err=True)


def _choose_reporter(progress: bool | None, quiet: bool) -> Reporter:
    if quiet:
        return NullReporter()
    if progress is None:
        progress = sys.stderr.isatty()
    return TqdmReporter() if progress else MessageReporter()


class _OneLineErrors(click.Command):
    """Click's usage errors, but as one line (the culprit and where to look)."""

    def main(  # type: ignore[override]
        self, args: Sequence[str] | None = None, prog_name: str | None = None, **extra: Any
    ) -> Any:
        try:
            return super().main(args, prog_name, standalone_mode=False, **extra)
        except click.UsageError as exc:
            _fail(f"{exc.format_message()} (see --help)", EXIT_USAGE)
        except click.exceptions.Abort:
            _fail("aborted", EXIT_INTERRUPTED)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)


@click.command(cls=_OneLineErrors, help=_HELP, context_settings={"max_content_width": 100})
@click.option(
    "-p", "--profile", help="AWS profile (default: AWS_PROFILE, env keys, default profile)."
)
@click.option(
    "-b",
    "--bucket",
    envvar="ICANHAZMODEL_BUCKET",
    show_envvar=True,
    help="S3 bucket holding the models.",
)
@click.option(
    "-m",
    "--model_dir",
    "--model-dir",
    "model_dir",
    default="ptms",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Directory the keys are mirrored under.",
)
@click.option(
    "-k",
    "--model_key",
    "--model-key",
    "model_key",
    required=True,
    help="S3 key of the model: a folder-like prefix, or one object.",
)
@click.option(
    "--endpoint-url",
    help="S3-compatible endpoint (MinIO, Ceph, a local server). "
    "Default: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, else AWS.",
)
@click.option("--region", help="AWS region of the bucket (default: from the profile).")
@click.option(
    "-j",
    "--concurrency",
    type=click.IntRange(1, 512),
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    help="Requests in flight at once, shared by all files and parts.",
)
@click.option(
    "--retries",
    type=click.IntRange(0, 100),
    default=5,
    show_default=True,
    help="Further attempts for each request or broken transfer before giving up on it.",
)
@click.option(
    "--stall-timeout",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Seconds without a byte before a transfer is dropped and retried.",
)
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="Check each file against S3's checksum (or MD5 ETag) before it lands.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Download everything again, replacing files changed locally.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show progress bars (default: when stderr is a terminal).",
)
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@click.version_option(__version__, "--version", prog_name="icanhazmodel")
def main(
    profile: str | None,
    bucket: str | None,
    model_dir: str,
    model_key: str,
    endpoint_url: str | None,
    region: str | None,
    concurrency: int,
    retries: int,
    stall_timeout: float,
    verify: bool,
    force: bool,
    progress: bool | None,
    quiet: bool,
) -> None:
    try:
        config = FetchConfig(
            bucket=bucket or "",
            key=model_key,
            dest=Path(model_dir),
            profile=profile,
            endpoint_url=endpoint_url,
            region=region,
            concurrency=concurrency,
            retries=retries,
            stall_timeout=stall_timeout,
            verify=verify,
            force=force,
        )
    except IcanhazmodelError as exc:
        _fail(str(exc), exc.exit_code)
    reporter = _choose_reporter(progress, quiet)
    try:
        result = anyio.run(run, config, reporter)
    except IcanhazmodelError as exc:
        reporter.close()
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        reporter.close()
        _fail("interrupted; run the same command again to finish", EXIT_INTERRUPTED)
    reporter.close()
    if not quiet or not result.ok:
        _print_summary(result)
    sys.exit(EXIT_OK if result.ok else EXIT_INCOMPLETE)
