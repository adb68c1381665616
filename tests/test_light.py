"""Runs that start without botocore: same route, same requests, same files.

``_light`` decides when botocore would decide nothing; these tests hold its
answer against botocore's own (a presigned URL) and check that anything
unusual, or a rejection by S3, brings botocore in.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import icanhazmodel
from icanhazmodel._botostore import open_botocore
from icanhazmodel._direct import FrozenCredentials, resolve_route
from icanhazmodel._light import LightStart, light_start
from icanhazmodel._proxy import Proxies
from icanhazmodel._s3 import S3Options
from icanhazmodel._tls import Trust
from tests.conftest import Bucket, tree_of
from tests.faultproxy import Fault, FaultProxy, fault_proxy

KEYS = {"AWS_ACCESS_KEY_ID": "AKIDLIGHT", "AWS_SECRET_ACCESS_KEY": "secret"}


def start(
    endpoint: str | None = "http://127.0.0.1:9000",
    *,
    environ: dict[str, str] | None = None,
    bucket: str = "models",
    profile: str | None = None,
    region: str | None = None,
    unsigned: bool = False,
) -> LightStart | None:
    return light_start(
        bucket=bucket,
        endpoint_url=endpoint,
        profile=profile,
        region=region,
        unsigned=unsigned,
        environ=KEYS | {"AWS_CONFIG_FILE": "/nonexistent/config"} | (environ or {}),
    )


async def botocores_route(endpoint: str, bucket: str, region: str | None) -> object:
    options = S3Options(bucket=bucket, endpoint_url=endpoint, region=region)
    boto = await open_botocore(options, Trust(), Proxies())
    try:
        return await resolve_route(boto.client, boto.credentials, bucket)
    finally:
        await boto.aclose()


@pytest.mark.parametrize(
    ("endpoint", "bucket", "region"),
    [
        ("http://127.0.0.1:9000", "models", None),
        ("http://127.0.0.1:9000/", "my.dotted.bucket", "eu-west-1"),
        ("http://127.0.0.1", "b-1", "us-west-2"),
        ("http://127.0.0.1:80", "models", None),
        ("https://127.0.0.1:8443", "Upper_Case", None),
        ("http://[::1]:9000", "models", "ap-south-1"),
    ],
)
def test_the_route_is_the_one_botocore_resolves(
    endpoint: str, bucket: str, region: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    light = start(endpoint, bucket=bucket, region=region)
    assert light is not None
    assert light.route == asyncio.run(botocores_route(endpoint, bucket, region))
    assert light.credentials == FrozenCredentials("AKIDLIGHT", "secret")


def test_the_region_comes_from_the_argument_then_the_environment_then_the_config(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config"
    config.write_text("[default]\nregion = eu-north-1\noutput = json\n")
    env = {"AWS_CONFIG_FILE": str(config)}

    def region(**kwargs: object) -> str | None:
        light = start(environ=env, **kwargs)  # type: ignore[arg-type]
        assert light is not None
        return light.route.region

    assert region() == "eu-north-1"
    env["AWS_DEFAULT_REGION"] = "ca-central-1"
    assert region() == "ca-central-1"
    assert region(region="sa-east-1") == "sa-east-1"
    assert region(unsigned=True) is None


@pytest.mark.parametrize(
    "case",
    [
        "hostname endpoint",
        "no endpoint",
        "endpoint with a path",
        "a profile",
        "no keys",
        "fips",
        "security token",
        "config with a role",
        "malformed config",
        "profile missing from config",
        "access point",
        "turned off",
    ],
)
def test_anything_botocore_might_decide_differently_goes_to_botocore(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config"
    config.write_text("[default]\nregion = eu-north-1\n")
    env: dict[str, str] = {"AWS_CONFIG_FILE": str(config)}
    kwargs: dict[str, object] = {}
    if case == "hostname endpoint":
        kwargs["endpoint"] = "http://localhost:9000"
    elif case == "no endpoint":
        kwargs["endpoint"] = None
    elif case == "endpoint with a path":
        kwargs["endpoint"] = "http://127.0.0.1:9000/s3"
    elif case == "a profile":
        kwargs["profile"] = "work"
    elif case == "no keys":
        env |= {"AWS_ACCESS_KEY_ID": ""}
    elif case == "fips":
        env |= {"AWS_USE_FIPS_ENDPOINT": "true"}
    elif case == "security token":
        env |= {"AWS_SECURITY_TOKEN": "t"}
    elif case == "config with a role":
        config.write_text("[default]\nrole_arn = arn:aws:iam::1:role/r\nsource_profile = x\n")
    elif case == "malformed config":
        config.write_text("region = eu-north-1\n[default\n")
    elif case == "profile missing from config":
        env |= {"AWS_PROFILE": "elsewhere"}
    elif case == "access point":
        kwargs["bucket"] = "arn:aws:s3:us-east-1:1:accesspoint/ap"
    elif case == "turned off":
        env |= {"ICANHAZMODEL_DIRECT_GETS": "0"}
    assert start(environ=env, **kwargs) is None  # type: ignore[arg-type]


# -- whole runs ------------------------------------------------------------------------


@pytest.fixture
def proxy(bucket: Bucket) -> Iterator[FaultProxy]:
    with fault_proxy(bucket.endpoint) as p:
        yield p


LOADED = """
import sys
from icanhazmodel._cli import main
code = 0
try:
    main([{argv}])
except SystemExit as exc:
    code = exc.code
print(__import__("json").dumps({{"code": code, "botocore": "aioboto3" in sys.modules}}))
"""


def cli_modules(*argv: str) -> dict[str, object]:
    code = LOADED.format(argv=", ".join(repr(a) for a in argv))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_a_plain_run_never_loads_botocore_and_a_profile_run_does(
    bucket: Bucket, tmp_path: Path, aws_env: Path
) -> None:
    bucket.put("m/config.yaml", b"a: 1\n")
    bucket.put("m/weights.bin", bytes(range(256)) * 64)
    argv = ["-b", bucket.name, "-k", "m", "--endpoint-url", bucket.endpoint, "--quiet"]
    plain = cli_modules(*argv, "-m", str(tmp_path / "plain"))
    assert plain == {"code": 0, "botocore": False}
    (aws_env / "credentials").write_text(
        "[work]\naws_access_key_id = testing\naws_secret_access_key = testing\n"
    )
    with_profile = cli_modules(*argv, "-m", str(tmp_path / "profile"), "--profile", "work")
    assert with_profile == {"code": 0, "botocore": True}
    assert tree_of(tmp_path / "plain") == tree_of(tmp_path / "profile")
    assert len(tree_of(tmp_path / "plain")) == 2


@pytest.mark.parametrize("code", ["AuthorizationHeaderMalformed", "SignatureDoesNotMatch"])
def test_a_rejected_light_start_hands_the_run_to_botocore(
    bucket: Bucket, proxy: FaultProxy, tmp_path: Path, code: str
) -> None:
    for i in range(3):
        bucket.put(f"m/{i}.bin", bytes([i]) * 1000)
    proxy.add(Fault(exact_path=f"/{bucket.name}", error=(400, code), times=1))
    result = asyncio.run(
        icanhazmodel.fetch(bucket=bucket.name, key="m", dest=tmp_path, endpoint_url=proxy.endpoint)
    )
    assert result.downloaded == 3
    assert tree_of(tmp_path) == {f"m/{i}.bin": bytes([i]) * 1000 for i in range(3)}
    listings = [s for s in proxy.requests("GET") if s.path == f"/{bucket.name}"]
    agents = [s.headers.get("user-agent", "") for s in listings]
    assert agents[0].startswith("icanhazmodel/")  # the light start's, rejected
    assert not any(a.startswith("icanhazmodel/") for a in agents[1:])
    assert len(agents) >= 2
