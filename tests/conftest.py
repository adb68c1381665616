"""Fixtures: real S3 endpoints on 127.0.0.1: moto's standalone server, and
SeaweedFS (a production store, see tests/seaweed.py) where a store's answers
matter.

Every download in the tests goes through the same aioboto3 code path users
hit, pointed at these servers with ``endpoint_url``; nothing is patched.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from moto.server import ThreadedMotoServer

from tests.sample_tree import SampleObject, fill_bucket, s3_client
from tests.seaweed import Unavailable, seaweedfs

# Tests send the CLI SIGINT as a terminal's Ctrl-C would. Run in the
# background of a script, pytest inherits SIGINT ignored, and so would every
# program it starts: give it Python's usual handler (children then start with
# the default), so those tests test the CLI, not how pytest was started.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}

_bucket_numbers = itertools.count()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def _moto_store() -> Any:
    """The S3 store behind the in-process moto server (for seeding only)."""
    from moto.backends import get_backend
    from moto.core import DEFAULT_ACCOUNT_ID

    return get_backend("s3")[DEFAULT_ACCOUNT_ID]["global"]


@pytest.fixture(scope="session")
def seaweed_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One SeaweedFS for the whole session. Where its binary cannot run, the
    tests that need it skip, saying why; in CI they fail instead."""
    try:
        with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as endpoint:
            yield endpoint
    except Unavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"SeaweedFS is required in CI: {exc}")
        pytest.skip(f"SeaweedFS cannot run here: {exc}")


@pytest.fixture(params=["moto", "seaweedfs"])
def store_bucket(request: pytest.FixtureRequest) -> Bucket:
    """A fresh bucket on each server: moto's model of S3, and SeaweedFS."""
    fixture = "moto_endpoint" if request.param == "moto" else "seaweed_endpoint"
    return new_bucket(request.getfixturevalue(fixture), server=request.param)


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fake credentials, and no way to read the developer's real ~/.aws."""
    aws_dir = tmp_path_factory.mktemp("aws")
    for name in list(os.environ):
        if name.startswith("AWS_") or name.startswith("ICANHAZMODEL_"):
            monkeypatch.delenv(name)
    for name, value in FAKE_ENV.items():
        monkeypatch.setenv(name, value)
    # `make test` runs the suite twice: as is, and with every run spread over
    # worker processes (ICANHAZMODEL_TEST_PROCESSES=4).
    if processes := os.environ.get("ICANHAZMODEL_TEST_PROCESSES"):
        monkeypatch.setenv("ICANHAZMODEL_PROCESSES", processes)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(aws_dir / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(aws_dir / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return aws_dir


@dataclass
class Bucket:
    """A fresh bucket on the moto server, with helpers to fill it."""

    name: str
    endpoint: str
    client: Any
    server: str = "moto"  # or "seaweedfs"

    def put(self, key: str, data: bytes = b"", **extra: Any) -> None:
        client = self.client
        if not data and self.server == "seaweedfs":
            # SeaweedFS 4.48 leaves the connection of an empty PUT unusable:
            # the client's next request on it waits a minute. A client of its
            # own keeps that connection away from the others.
            client = s3_client(self.endpoint)
        client.put_object(Bucket=self.name, Key=key, Body=data, **extra)

    def put_all(self, objects: Iterable[SampleObject]) -> None:
        fill_bucket(self.client, self.name, objects)

    def put_many(self, objects: dict[str, bytes]) -> None:
        """Store *objects* as plain single-part uploads, quickly.

        A test that needs a thousand keys should spend its time on the run,
        not on a thousand PUTs (7 ms of CPU each through moto's HTTP front).
        The moto server runs in this process, so its store is filled
        directly; every request of the tool under test still goes over HTTP.
        """
        if self.server == "moto":
            store = _moto_store()
            for key, data in objects.items():
                store.put_object(self.name, key, data)
            return
        for key, data in objects.items():
            self.put(key, data)

    def plain_client(self) -> Any:
        """A client that adds no checksum of its own to uploads."""
        return s3_client(self.endpoint, checksums=False)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.name, Key=key)


@pytest.fixture
def bucket(moto_endpoint: str) -> Bucket:
    return new_bucket(moto_endpoint)


def new_bucket(
    endpoint: str, objects: dict[str, bytes] | None = None, server: str = "moto"
) -> Bucket:
    """A fresh bucket on the *server* at *endpoint*, holding *objects*."""
    name = f"test-bucket-{next(_bucket_numbers)}"
    client = s3_client(endpoint)
    client.create_bucket(Bucket=name)
    made = Bucket(name, endpoint, client, server)
    made.put_many(objects or {})
    return made


@pytest.fixture(params=["direct", "botocore"])
def request_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test once per GET path: the direct one (default) and botocore's."""
    if request.param == "botocore":
        monkeypatch.setenv("ICANHAZMODEL_DIRECT_GETS", "0")
    return str(request.param)


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


def entry_point() -> str:
    """The installed `icanhazmodel` console script next to this Python."""
    script = Path(sys.executable).with_name("icanhazmodel")
    assert script.exists(), f"console script missing: {script} (pip install -e .)"
    return str(script)


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> CliResult:
    """Run the real CLI as users do, in a subprocess."""
    proc = subprocess.run(
        [entry_point(), *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def tree_of(root: Path) -> dict[str, bytes]:
    """Every file under *root* (relative path → bytes), temp files included."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".icanhazmodel" not in p.relative_to(root).parts
    }
