"""Everyday options through the real CLI against moto: filters, dry run, JSON,
s3:// URLs, unsigned and requester-pays requests, versions, environment
defaults, sharding."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest

import icanhazmodel
from icanhazmodel import Action
from icanhazmodel._progress import LineReporter
from tests.conftest import Bucket, run_cli, tree_of
from tests.faultproxy import fault_proxy

FILES = {
    "m/models/ft/spec.yaml": b"yaml",
    "m/models/ft/model.bin": b"model bytes",
    "m/models/ft/weights.npy": b"weights",
    "m/data/train.jsonl": b"{}\n" * 10,
    "m/README.md": b"# readme",
}


@pytest.fixture
def filled(bucket: Bucket) -> Bucket:
    for key, data in FILES.items():
        bucket.put(key, data)
    bucket.put("m/data/", b"")  # a folder marker
    return bucket


def cli(bucket: Bucket, *args: str, endpoint: str | None = None, **kwargs: object):  # type: ignore[no-untyped-def]
    return run_cli(
        "-b", bucket.name, "--endpoint-url", endpoint or bucket.endpoint, *args, **kwargs
    )


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--include", "*.yaml"], {"m/models/ft/spec.yaml"}),
        (["--include", "models/*"], {k for k in FILES if "/models/" in k}),
        (
            ["--exclude", "data/*", "--exclude", "*.npy"],
            {"m/models/ft/spec.yaml", "m/models/ft/model.bin", "m/README.md"},
        ),
        (
            ["--exclude", "*.bin", "--include", "models/*"],
            {"m/models/ft/spec.yaml", "m/models/ft/weights.npy"},
        ),
    ],
)
def test_include_and_exclude(
    filled: Bucket, tmp_path: Path, flags: list[str], expected: set[str]
) -> None:
    result = cli(filled, "-k", "m", "-m", str(tmp_path), *flags)
    assert result.code == 0, result.stderr
    assert set(tree_of(tmp_path)) == expected


def test_filters_that_match_nothing_say_so(filled: Bucket, tmp_path: Path) -> None:
    result = cli(filled, "-k", "m", "-m", str(tmp_path), "--include", "*.nothing")
    assert result.code == 1
    assert "matches --include/--exclude" in result.stderr


def test_dry_run_lists_everything_and_writes_nothing(filled: Bucket, tmp_path: Path) -> None:
    filled.put("m/bad\\key", b"x")
    dest = tmp_path / "never-created"
    result = cli(filled, "-k", "m", "-m", str(dest), "--dry-run")
    assert not dest.exists()
    assert result.code == 1  # one key would be refused
    lines = result.stdout.splitlines()
    for key in FILES:
        assert any(line.startswith("download") and key in line for line in lines), key
    assert any(line.startswith("folder") and "m/data/" in line for line in lines)
    assert any(line.startswith("refused") and "backslash" in line for line in lines)
    assert all(line.split()[0] in ("download", "folder", "refused") for line in lines)
    assert "would download 5 files" in result.stderr  # totals beside the run's, not in the plan


def test_dry_run_knows_what_is_unchanged_and_what_was_edited(
    filled: Bucket, tmp_path: Path
) -> None:
    assert cli(filled, "-k", "m", "-m", str(tmp_path)).code == 0
    (tmp_path / "m/README.md").write_bytes(b"my edit")
    filled.put("m/data/train.jsonl", b"new data\n")
    before = tree_of(tmp_path)
    plan = asyncio.run(
        icanhazmodel.plan(bucket=filled.name, key="m", dest=tmp_path, endpoint_url=filled.endpoint)
    )
    actions = {o.key: o.action for o in plan.objects}
    assert actions["m/README.md"] is Action.KEEP_LOCAL
    assert actions["m/data/train.jsonl"] is Action.DOWNLOAD
    assert actions["m/models/ft/model.bin"] is Action.SKIP
    assert actions["m/data/"] is Action.FOLDER
    assert tree_of(tmp_path) == before


def test_json_summary_on_stdout(filled: Bucket, tmp_path: Path) -> None:
    filled.put("m/bad\\key", b"x")
    result = cli(filled, "-k", "m", "-m", str(tmp_path), "--json", "--no-progress")
    document = json.loads(result.stdout)
    assert document["downloaded"] == len(FILES)
    assert document["refused"] == 1
    assert document["ok"] is False
    assert document["problems"][0]["key"] == "m/bad\\key"
    assert document["problems"][0]["status"] == "refused"
    assert document["verification"] == {"crc32": len(FILES)}
    assert document["size_only"] == []
    assert "refused" in result.stderr  # people still get their messages on stderr


def test_json_dry_run_is_the_plan_as_json_lines(filled: Bucket, tmp_path: Path) -> None:
    """One object a line as it is planned (a million keys never sit in memory),
    then one line with the totals."""
    result = cli(filled, "-k", "m", "-m", str(tmp_path), "--json", "--dry-run")
    assert result.code == 0, result.stderr
    *objects, summary = [json.loads(line) for line in result.stdout.splitlines()]
    assert {o["key"] for o in objects if o["action"] == "download"} == set(FILES)
    assert all(set(o) >= {"key", "size", "path", "action"} for o in objects)
    plan = summary["plan"]
    assert plan["download"] == len(FILES)
    assert plan["bytes_to_download"] == sum(len(data) for data in FILES.values())
    assert "objects" not in plan
    assert summary["dry_run"] is True
    assert tree_of(tmp_path) == {}


def test_json_dry_run_errors_are_one_line(bucket: Bucket, tmp_path: Path) -> None:
    result = cli(bucket, "-k", "missing", "-m", str(tmp_path), "--json", "--dry-run")
    assert result.code == 1
    (line,) = result.stdout.splitlines()
    assert "nothing at" in json.loads(line)["error"]


def test_json_errors_are_json_too(bucket: Bucket, tmp_path: Path) -> None:
    result = cli(bucket, "-k", "missing", "-m", str(tmp_path), "--json")
    assert result.code == 1
    document = json.loads(result.stdout)
    assert document["ok"] is False
    assert "nothing at" in document["error"]


def test_s3_url_sets_bucket_and_key(filled: Bucket, tmp_path: Path) -> None:
    result = run_cli(
        "-k",
        f"s3://{filled.name}/m/models",
        "-m",
        str(tmp_path),
        "--endpoint-url",
        filled.endpoint,
    )
    assert result.code == 0, result.stderr
    assert set(tree_of(tmp_path)) == {k for k in FILES if "/models/" in k}


def test_s3_url_for_a_whole_bucket(filled: Bucket, tmp_path: Path) -> None:
    result = run_cli(
        "-k", f"s3://{filled.name}/", "-m", str(tmp_path), "--endpoint-url", filled.endpoint
    )
    assert result.code == 0, result.stderr
    assert set(tree_of(tmp_path)) == set(FILES)


def test_s3_url_and_another_bucket_disagree(tmp_path: Path) -> None:
    result = run_cli("-b", "one", "-k", "s3://two/key", "-m", str(tmp_path))
    assert result.code == 2
    assert "disagrees" in result.stderr


def test_no_sign_request_sends_no_credentials(
    filled: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in FILES:  # a public bucket's objects
        filled.client.put_object_acl(Bucket=filled.name, Key=key, ACL="public-read")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with fault_proxy(filled.endpoint) as proxy:
        result = cli(
            filled, "-k", "m", "-m", str(tmp_path), "--no-sign-request", endpoint=proxy.endpoint
        )
        assert result.code == 0, result.stderr
        assert proxy.seen
        assert all("authorization" not in s.headers for s in proxy.seen)
    assert set(tree_of(tmp_path)) == set(FILES)


def test_request_payer_is_sent_on_every_request(filled: Bucket, tmp_path: Path) -> None:
    with fault_proxy(filled.endpoint) as proxy:
        result = cli(
            filled,
            "-k",
            "m",
            "-m",
            str(tmp_path),
            "--request-payer",
            "requester",
            endpoint=proxy.endpoint,
        )
        assert result.code == 0, result.stderr
        assert all(s.headers.get("x-amz-request-payer") == "requester" for s in proxy.seen)


def test_version_id_fetches_that_version(bucket: Bucket, tmp_path: Path) -> None:
    bucket.client.put_bucket_versioning(
        Bucket=bucket.name, VersioningConfiguration={"Status": "Enabled"}
    )
    old = bucket.client.put_object(Bucket=bucket.name, Key="m/model.bin", Body=b"version one")
    bucket.put("m/model.bin", b"version two")
    result = cli(bucket, "-k", "m/model.bin", "-m", str(tmp_path), "--version-id", old["VersionId"])
    assert result.code == 0, result.stderr
    assert tree_of(tmp_path) == {"m/model.bin": b"version one"}


def test_version_id_needs_an_object_key(tmp_path: Path) -> None:
    result = run_cli("-b", "bkt", "-k", "m/", "--version-id", "v1", "-m", str(tmp_path))
    assert result.code == 2
    assert "--version-id" in result.stderr


def test_every_option_has_an_environment_default(filled: Bucket, tmp_path: Path) -> None:
    result = run_cli(
        env={
            "ICANHAZMODEL_BUCKET": filled.name,
            "ICANHAZMODEL_MODEL_KEY": "m",
            "ICANHAZMODEL_MODEL_DIR": str(tmp_path),
            "ICANHAZMODEL_ENDPOINT_URL": filled.endpoint,
            "ICANHAZMODEL_INCLUDE": "*.yaml *.md",
            "ICANHAZMODEL_CONCURRENCY": "2",
        }
    )
    assert result.code == 0, result.stderr
    assert set(tree_of(tmp_path)) == {"m/models/ft/spec.yaml", "m/README.md"}
    help_text = run_cli("--help").stdout
    for variable in [
        "ICANHAZMODEL_MODEL_DIR",
        "ICANHAZMODEL_INCLUDE",
        "ICANHAZMODEL_SHARD",
        "ICANHAZMODEL_DRY_RUN",
        "ICANHAZMODEL_PROFILE",
    ]:
        assert variable in help_text


def test_shards_together_fetch_everything_exactly_once(filled: Bucket, tmp_path: Path) -> None:
    for i in range(30):
        filled.put(f"m/many/{i:02d}.bin", bytes([i]) * 10)
    everything = set(FILES) | {f"m/many/{i:02d}.bin" for i in range(30)}
    seen: list[set[str]] = []
    for index in range(3):
        dest = tmp_path / f"node{index}"
        result = cli(filled, "-k", "m", "-m", str(dest), "--shard", f"{index}/3")
        assert result.code == 0, result.stderr
        seen.append(set(tree_of(dest)))
    assert set.union(*seen) == everything
    assert sum(len(s) for s in seen) == len(everything)
    assert all(s for s in seen)


def test_shard_auto_from_torchrun_variables(filled: Bucket, tmp_path: Path) -> None:
    result = cli(
        filled,
        "-k",
        "m",
        "-m",
        str(tmp_path),
        "--shard",
        "auto",
        env={"RANK": "0", "WORLD_SIZE": "1"},
    )
    assert result.code == 0, result.stderr
    assert set(tree_of(tmp_path)) == set(FILES)


def test_library_keywords_match_the_options(filled: Bucket, tmp_path: Path) -> None:
    result = asyncio.run(
        icanhazmodel.fetch(
            bucket=filled.name,
            key="m",
            dest=tmp_path,
            endpoint_url=filled.endpoint,
            include=["models/*"],
            exclude=["*.npy"],
            shard="0/1",
        )
    )
    assert set(tree_of(tmp_path)) == {"m/models/ft/spec.yaml", "m/models/ft/model.bin"}
    # Out: data/train.jsonl, the data/ marker, README.md (not models/*), weights.npy (*.npy).
    assert result.excluded == 4


def test_progress_in_a_log_is_a_plain_line_now_and_then() -> None:
    now = [0.0]
    out = io.StringIO()
    reporter = LineReporter(out, every=5.0, clock=lambda: now[0])
    reporter.listed(2, 200)
    reporter.advanced("a", 100)
    assert out.getvalue() == ""  # not yet: less than 5 s
    now[0] = 6.0
    reporter.advanced("a", 50)
    reporter.file_done("a")
    assert out.getvalue().count("\n") == 1
    assert "0/2+ files (listing)" in out.getvalue()  # the totals may still grow
    assert "\r" not in out.getvalue()
    reporter.listing_done()
    now[0] = 12.0
    reporter.file_done("b")
    assert out.getvalue().splitlines()[-1].startswith("progress: 2/2 files,")


def test_region_is_the_signing_region(filled: Bucket, tmp_path: Path) -> None:
    with fault_proxy(filled.endpoint) as proxy:
        result = cli(
            filled, "-k", "m", "-m", str(tmp_path), "--region", "eu-west-3", endpoint=proxy.endpoint
        )
        assert result.code == 0, result.stderr
        gets = [s for s in proxy.requests("GET", "/m/") if "list-type" not in s.path]
        assert gets
        assert all("/eu-west-3/s3/aws4_request" in s.headers["authorization"] for s in gets)


def test_shell_completion_comes_from_click() -> None:
    result = run_cli(env={"_ICANHAZMODEL_COMPLETE": "bash_source"})
    assert result.code == 0
    assert "_icanhazmodel_completion" in result.stdout
