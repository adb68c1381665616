"""What the CLI prints at the end: a summary for people, JSON for programs.

Pure functions from results to text; the CLI decides where each goes
(stderr for people, stdout for --json and for a dry run's plan).
"""

from __future__ import annotations

import json
from typing import Any

from ._models import Action, FetchResult, ObjectReport, Plan, PlannedObject

MiB = 1 << 20


def human_size(nbytes: int) -> str:
    if nbytes >= 1 << 30:
        return f"{nbytes / (1 << 30):.2f} GiB"
    if nbytes >= MiB:
        return f"{nbytes / MiB:.1f} MiB"
    if nbytes >= 1024:
        return f"{nbytes / 1024:.1f} KiB"
    return f"{nbytes} B"


def counted(count: int, noun: str) -> str:
    """'1 file', '2 files'."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def summary_line(result: FetchResult) -> str:
    if result.downloaded:
        downloaded = counted(result.downloaded, "file")
        parts = [f"{downloaded} downloaded ({human_size(result.bytes_downloaded)})"]
    else:
        parts = ["nothing downloaded"]
    if result.resumed:
        parts.append(
            f"{result.resumed} resumed ({human_size(result.bytes_resumed)} already on disk)"
        )
    if result.folders:
        parts.append(counted(result.folders, "folder"))
    if result.skipped or not result.downloaded:
        parts.append(f"{result.skipped} unchanged")
    for count, what in (
        (result.refused, "refused"),
        (result.failed, "failed"),
        (result.kept_local, "kept as edited locally"),
        (result.excluded, "excluded by filters"),
        (result.other_shards, "left to other shards"),
    ):
        if count:
            parts.append(f"{count} {what}")
    how = [f"{result.processes} processes"] if result.processes > 1 else []
    if result.bytes_downloaded and result.seconds > 0:
        how.insert(0, f"{human_size(int(result.bytes_downloaded / result.seconds))}/s")
    return f"{', '.join(parts)} in {result.seconds:.2f} s" + (f" ({', '.join(how)})" if how else "")


def verification_line(result: FetchResult) -> str:
    levels = ", ".join(f"{count} {level}" for level, count in sorted(result.verification.items()))
    return f"verified: {levels}" if levels else ""


# Problems are told once, as they happen, up to this many: a run with
# thousands of failures must not bury its own summary.
LIVE_PROBLEMS = 20
MORE_PROBLEMS = (
    f"... more than {LIVE_PROBLEMS} problems; the rest are counted in the summary "
    "(--json lists every one)"
)


def problem_line(p: ObjectReport) -> str:
    return f"{p.status.value}: {p.key!r}: {p.reason}"


def problem_lines(result: FetchResult, limit: int = LIVE_PROBLEMS) -> list[str]:
    """The problems (for a run that did not tell them as they happened),
    at most *limit* of them, and a manifest that could not be kept."""
    lines = [problem_line(p) for p in result.problems[:limit]]
    if len(result.problems) > limit:
        lines.append(MORE_PROBLEMS)
    if result.manifest_error:
        lines.append(manifest_line(result.manifest_error))
    return lines


def manifest_line(error: str) -> str:
    return (
        f"icanhazmodel: error: {error} (the files above landed and were "
        "checked; a later run checks them against S3 again)"
    )


def plan_line(o: PlannedObject) -> str:
    """One planned object: action, size, key and where it goes."""
    return f"{o.action.value:<10} {human_size(o.size):>10}  {o.key}" + (
        f"  -> {o.path}" if o.action is not Action.REFUSED else f"  ({o.reason})"
    )


def planned_document(o: PlannedObject) -> dict[str, Any]:
    """One planned object as a --dry-run --json line."""
    return {
        "key": o.key,
        "size": o.size,
        "path": o.path,
        "action": o.action.value,
        **({"reason": o.reason} if o.reason else {}),
    }


def plan_totals(plan: Plan) -> list[str]:
    """A dry run's summary: what a real run would do."""
    totals = [
        f"would download {counted(plan.count(Action.DOWNLOAD), 'file')} "
        f"({human_size(plan.bytes_to_download)})",
        f"skip {plan.count(Action.SKIP)} unchanged",
    ]
    for action, what in (
        (Action.FOLDER, "create {} folders"),
        (
            Action.KEEP_LOCAL,
            "keep {} locally edited (delete them, or --force downloads every file again)",
        ),
        (Action.REFUSED, "refuse {}"),
    ):
        if count := plan.count(action):
            totals.append(what.format(count))
    if plan.excluded:
        totals.append(f"{plan.excluded} excluded by filters")
    if plan.other_shards:
        totals.append(f"{plan.other_shards} left to other shards")
    lines = ["; ".join(totals)]
    if plan.free_bytes is not None and plan.bytes_to_download > plan.free_bytes:
        lines.append(
            f"warning: that is more than the {human_size(plan.free_bytes)} free under model_dir"
        )
    return lines


def result_document(result: FetchResult, **context: Any) -> dict[str, Any]:
    """The --json document: counts, timing, problems, and a dry run's plan."""
    document: dict[str, Any] = {
        **context,
        "ok": result.ok,
        "downloaded": result.downloaded,
        "folders": result.folders,
        "skipped": result.skipped,
        "refused": result.refused,
        "failed": result.failed,
        "kept_local": result.kept_local,
        "manifest_error": result.manifest_error,
        "excluded": result.excluded,
        "other_shards": result.other_shards,
        "bytes_downloaded": result.bytes_downloaded,
        "resumed": result.resumed,
        "bytes_resumed": result.bytes_resumed,
        "seconds": round(result.seconds, 3),
        "processes": result.processes,
        "in_flight": result.in_flight,
        "in_flight_peak": result.in_flight_peak,
        "verification": dict(result.verification),
        "problems": [
            {
                "key": p.key,
                "status": p.status.value,
                "reason": p.reason,
                "path": p.path,
                "size": p.size,
            }
            for p in result.problems
        ],
        "size_only": [{"key": s.key, "path": s.path, "why": s.reason} for s in result.size_only],
    }
    if result.plan is not None:
        plan = result.plan
        document["plan"] = {
            **({"objects": [planned_document(o) for o in plan.objects]} if plan.objects else {}),
            "download": plan.count(Action.DOWNLOAD),
            "bytes_to_download": plan.bytes_to_download,
            "skip": plan.count(Action.SKIP),
            "keep_local": plan.count(Action.KEEP_LOCAL),
            "refused": plan.count(Action.REFUSED),
            "folders": plan.count(Action.FOLDER),
            "excluded": plan.excluded,
            "other_shards": plan.other_shards,
            "free_bytes": plan.free_bytes,
        }
    return document


def error_document(message: str, exit_code: int, **context: Any) -> dict[str, Any]:
    return {**context, "ok": False, "error": message, "exit_code": exit_code}


# Built once: json.dumps with options builds an encoder per call, a third of
# the cost of a dry run's line.
_ONE_LINE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps(document: dict[str, Any], *, one_line: bool = False) -> str:
    """Indented, or on one line for JSON Lines (--dry-run --json)."""
    if one_line:
        return _ONE_LINE.encode(document)
    return json.dumps(document, indent=2, ensure_ascii=False)
