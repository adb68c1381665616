"""Secure transport: every certificate and host name checked, on every path.

moto is put behind a TLS front (:mod:`tests.tlsfront`) that shows a trusted
certificate, one for another name, an expired one, or one from a CA nobody
named; and behind a CONNECT proxy, as a corporate network would. Each case
runs on both GET paths (the direct one and botocore's), directly and through
the proxy. Untrusted answers are refused within seconds, with one line and no
file written; trusted ones download as before, the direct path still in use.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

import icanhazmodel
from icanhazmodel._proxy import Proxies, bypasses
from tests.conftest import Bucket, CliResult, run_cli, tree_of
from tests.tlsfront import ConnectProxy, TlsFront, connect_proxy, tls_front

FILES = {"p/a.txt": b"hello\n", "p/d/b.bin": os.urandom(300_000), "p/d/c.bin": os.urandom(1500)}
BUNDLE_SOURCES = ["AWS_CA_BUNDLE", "--ca-bundle", "profile ca_bundle"]


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def certificates(ca: trustme.CA) -> dict[str, trustme.LeafCert]:
    now = datetime.datetime.now(datetime.UTC)
    return {
        "trusted": ca.issue_cert("127.0.0.1"),
        "other name": ca.issue_cert("only.example"),
        "expired": ca.issue_cert(
            "127.0.0.1",
            not_before=now - datetime.timedelta(days=30),
            not_after=now - datetime.timedelta(days=1),
        ),
        "unknown CA": trustme.CA().issue_cert("127.0.0.1"),
    }


def server_context(cert: trustme.LeafCert) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    return context


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def filled(bucket: Bucket) -> Bucket:
    for key, data in FILES.items():
        bucket.put(key, data)
    return bucket


@pytest.fixture(params=["no proxy", "CONNECT proxy"])
def route(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ConnectProxy | None]:
    """Each case directly, and through a forward proxy (HTTPS_PROXY): the proxy, or None."""
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    if request.param == "no proxy":
        yield None
        return
    with connect_proxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        yield proxy


@pytest.fixture
def front(filled: Bucket, certificates: dict[str, trustme.LeafCert]) -> Iterator[TlsFront]:
    with tls_front(filled.endpoint, server_context(certificates["trusted"])) as served:
        yield served


def name_the_bundle(
    source: str, path: Path, aws_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[str], dict[str, object]]:
    """Name *path* as the CA bundle the way *source* says: (CLI args, fetch kwargs)."""
    if source == "AWS_CA_BUNDLE":
        monkeypatch.setenv("AWS_CA_BUNDLE", str(path))
        return [], {}
    if source == "--ca-bundle":
        return ["--ca-bundle", str(path)], {"ca_bundle": str(path)}
    # A named profile: its keys in the credentials file, its ca_bundle in the config.
    (aws_dir / "config").write_text(f"[profile tls]\nca_bundle = {path}\n")
    (aws_dir / "credentials").write_text(
        "[tls]\naws_access_key_id = testing\naws_secret_access_key = testing\n"
    )
    return ["--profile", "tls"], {"profile": "tls"}


def _fetch(endpoint: str, bucket: Bucket, dest: Path, **kwargs: object) -> icanhazmodel.FetchResult:
    return asyncio.run(
        icanhazmodel.fetch(
            bucket=bucket.name,
            key="p",
            dest=dest,
            endpoint_url=endpoint,
            **kwargs,  # type: ignore[arg-type]
        )
    )


def _cli(endpoint: str, bucket: Bucket, dest: Path, *args: str) -> CliResult:
    return run_cli("--endpoint-url", endpoint, "-b", bucket.name, "-k", "p", "-m", str(dest), *args)


def assert_refused(result: CliResult, seconds: float, dest: Path, *needles: str) -> None:
    assert result.code == 2, result
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("icanhazmodel:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert seconds < 10, seconds
    assert not dest.exists()


# -- trusted: downloads as before ------------------------------------------------------


@pytest.mark.parametrize("source", BUNDLE_SOURCES)
def test_a_private_ca_named_anywhere_is_trusted_on_every_path(
    source: str,
    request_path: str,
    route: ConnectProxy | None,
    front: TlsFront,
    filled: Bucket,
    ca_file: Path,
    aws_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, kwargs = name_the_bundle(source, ca_file, aws_env, monkeypatch)
    result = _fetch(front.endpoint, filled, tmp_path / "ptms", **kwargs)
    assert result.ok, result.problems
    assert tree_of(tmp_path / "ptms") == FILES
    assert front.handshakes > 0
    direct_gets = [agent for agent in front.user_agents() if "direct GET" in agent]
    # The direct path stays in use wherever it applies, proxy or not.
    assert bool(direct_gets) == (request_path == "direct")
    if route is not None:
        assert route.tunnels
        assert set(route.tunnels) == {f"127.0.0.1:{front.port}"}


def test_worker_processes_trust_what_the_parent_trusts(
    front: TlsFront, filled: Bucket, ca_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_CA_BUNDLE", str(ca_file))
    result = _fetch(front.endpoint, filled, tmp_path / "ptms", processes=2)
    assert result.ok, result.problems
    assert result.processes == 2
    assert tree_of(tmp_path / "ptms") == FILES


# -- untrusted: refused at once, one line, nothing written -------------------------------


@pytest.mark.parametrize(
    ("certificate", "needle"),
    [
        ("other name", "not for '127.0.0.1'"),
        ("expired", "has expired"),
        ("unknown CA", "issued by a CA that"),
    ],
)
def test_an_untrusted_certificate_is_refused_on_every_path(
    certificate: str,
    needle: str,
    request_path: str,
    route: ConnectProxy | None,
    filled: Bucket,
    certificates: dict[str, trustme.LeafCert],
    ca_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_CA_BUNDLE", str(ca_file))
    dest = tmp_path / "ptms"
    with tls_front(filled.endpoint, server_context(certificates[certificate])) as served:
        started = time.monotonic()
        result = _cli(served.endpoint, filled, dest)
        seconds = time.monotonic() - started
    assert_refused(result, seconds, dest, needle, f"https://127.0.0.1:{served.port}")
    assert served.handshakes == 0
    if route is not None:
        assert route.tunnels
    # Refused, not retried: one attempt per connection the run opened at once.
    assert served.refused <= 2, served.refused
    if certificate == "unknown CA":
        assert "--ca-bundle, AWS_CA_BUNDLE or ca_bundle" in result.stderr


def test_no_verify_ssl_downloads_anyway_and_says_so(
    request_path: str,
    filled: Bucket,
    certificates: dict[str, trustme.LeafCert],
    tmp_path: Path,
) -> None:
    with tls_front(filled.endpoint, server_context(certificates["unknown CA"])) as served:
        result = _cli(served.endpoint, filled, tmp_path / "ptms", "--no-verify-ssl")
    assert result.code == 0, result
    assert "TLS certificates are not checked" in result.stderr
    assert tree_of(tmp_path / "ptms") == FILES


def test_https_to_a_plain_http_port_fails_at_once(
    request_path: str, filled: Bucket, tmp_path: Path
) -> None:
    endpoint = filled.endpoint.replace("http://", "https://")
    started = time.monotonic()
    result = _cli(endpoint, filled, tmp_path / "ptms")
    assert_refused(
        result, time.monotonic() - started, tmp_path / "ptms", "no TLS connection", "http://"
    )


def test_both_paths_trust_the_same_default_store(
    request_path: str,
    front: TlsFront,
    filled: Bucket,
    ca_file: Path,
    tmp_path: Path,
) -> None:
    """No CA named: both paths use certifi's bundle, so OpenSSL's SSL_CERT_FILE
    (which only the direct path once honoured) changes nothing on either."""
    started = time.monotonic()
    result = run_cli(
        "--endpoint-url",
        front.endpoint,
        "-b",
        filled.name,
        "-k",
        "p",
        "-m",
        str(tmp_path / "ptms"),
        env={"SSL_CERT_FILE": str(ca_file)},
    )
    assert_refused(result, time.monotonic() - started, tmp_path / "ptms", "issued by a CA")


# -- CA bundles that are not one -----------------------------------------------------------


@pytest.mark.parametrize("source", BUNDLE_SOURCES)
@pytest.mark.parametrize("content", ["not a certificate", "missing", "a folder"])
def test_a_ca_bundle_that_is_not_one_gets_one_line_naming_it(
    source: str,
    content: str,
    request_path: str,
    front: TlsFront,
    filled: Bucket,
    aws_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bundle = tmp_path / "bundle.pem"
    if content == "not a certificate":
        bundle.write_text("hello, I am not a certificate\n")
    elif content == "a folder":
        bundle.mkdir()
    args, _ = name_the_bundle(source, bundle, aws_env, monkeypatch)
    dest = tmp_path / "ptms"
    started = time.monotonic()
    result = _cli(front.endpoint, filled, dest, *args)
    named_by = {"profile ca_bundle": "ca_bundle in profile 'tls'"}.get(source, source)
    assert_refused(result, time.monotonic() - started, dest, named_by, str(bundle))
    assert front.handshakes == 0


# -- proxies ------------------------------------------------------------------------------------


def test_no_proxy_with_a_port_keeps_both_paths_off_the_proxy(
    request_path: str,
    front: TlsFront,
    filled: Bucket,
    ca_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_CA_BUNDLE", str(ca_file))
    with connect_proxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", f"example.com, 127.0.0.1:{front.port}")
        result = _fetch(front.endpoint, filled, tmp_path / "ptms")
    assert result.ok, result.problems
    assert proxy.tunnels == []
    direct_gets = [agent for agent in front.user_agents() if "direct GET" in agent]
    assert bool(direct_gets) == (request_path == "direct")


@contextlib.contextmanager
def https_proxy(
    certificate: trustme.LeafCert, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ConnectProxy, TlsFront]]:
    """HTTPS_PROXY=https://...: a CONNECT proxy behind TLS with *certificate*."""
    for name in ("NO_PROXY", "no_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    with connect_proxy() as proxy, tls_front(proxy.url, server_context(certificate)) as front:
        monkeypatch.setenv("HTTPS_PROXY", front.endpoint)
        yield proxy, front


def test_an_https_proxy_is_checked_and_tunnels_tls_inside_tls(
    front: TlsFront,
    filled: Bucket,
    certificates: dict[str, trustme.LeafCert],
    ca_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The proxy's own certificate is checked, and the endpoint's inside the
    tunnel, end to end (the direct path)."""
    monkeypatch.setenv("AWS_CA_BUNDLE", str(ca_file))
    with https_proxy(certificates["trusted"], monkeypatch) as (proxy, proxy_tls):
        result = _fetch(front.endpoint, filled, tmp_path / "ptms")
    assert result.ok, result.problems
    assert tree_of(tmp_path / "ptms") == FILES
    assert proxy_tls.handshakes > 0
    assert set(proxy.tunnels) == {f"127.0.0.1:{front.port}"}
    assert any("direct GET" in agent for agent in front.user_agents())


def test_an_https_proxy_with_an_untrusted_certificate_is_refused_by_name(
    front: TlsFront,
    filled: Bucket,
    certificates: dict[str, trustme.LeafCert],
    ca_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_CA_BUNDLE", str(ca_file))
    dest = tmp_path / "ptms"
    with https_proxy(certificates["unknown CA"], monkeypatch) as (proxy, proxy_tls):
        started = time.monotonic()
        result = _cli(front.endpoint, filled, dest)
        # The line names the proxy, whose certificate it is.
        assert_refused(
            result, time.monotonic() - started, dest, "issued by a CA that", f":{proxy_tls.port}"
        )
    assert proxy.tunnels == []
    assert front.handshakes == 0


def test_plain_http_goes_through_http_proxy_on_both_paths(
    request_path: str, filled: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    with connect_proxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        result = _fetch(filled.endpoint, filled, tmp_path / "ptms")
    assert result.ok, result.problems
    assert tree_of(tmp_path / "ptms") == FILES
    assert any(f"/{filled.name}/p/a.txt" in line for line in proxy.forwarded), proxy.forwarded


@pytest.mark.parametrize(
    ("entries", "host", "port", "bypassed"),
    [
        ("127.0.0.1:9000", "127.0.0.1", 9000, True),
        ("127.0.0.1:9000", "127.0.0.1", 9001, False),
        ("127.0.0.1", "127.0.0.1", 9000, True),
        ("example.com", "s3.example.com", 443, True),
        (".example.com", "s3.example.com", 443, True),
        ("*.example.com", "s3.example.com", 443, True),
        ("example.com", "badexample.com", 443, False),
        ("example.com:443", "s3.example.com", 443, True),
        ("10.0.0.0/8", "10.1.2.3", 443, True),
        ("10.0.0.0/8", "11.1.2.3", 443, False),
        ("*", "anything.at.all", 443, True),
        ("", "127.0.0.1", 443, False),
        ("::1", "[::1]", 9000, True),
        ("S3.Example.COM", "s3.example.com", 443, True),
    ],
)
def test_no_proxy_rules(entries: str, host: str, port: int, bypassed: bool) -> None:
    proxies = Proxies.from_environ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": entries})
    assert bypasses(proxies.no_proxy, host, port) is bypassed
    url = f"https://{host}:{port}/bucket/key"
    assert (proxies.for_url(url) is None) is bypassed


def test_proxy_variables_are_read_as_urllib_reads_them() -> None:
    environ = {"HTTPS_PROXY": "upper:1", "https_proxy": "lower:2", "HTTP_PROXY": "http://h:3"}
    proxies = Proxies.from_environ(environ)
    assert proxies.https == "http://lower:2"  # the lower-case name wins; no scheme: http
    assert proxies.http == "http://h:3"
    cgi = Proxies.from_environ({"HTTP_PROXY": "http://evil:1", "REQUEST_METHOD": "GET"})
    assert cgi.http is None  # httpoxy: a client's Proxy header, not the user's setting
    assert Proxies.from_environ({}).for_url("https://s3.amazonaws.com/b/k") is None


# -- credentials and endpoints: messages that say what is wrong -----------------------------


def test_a_profile_without_keys_says_so_and_that_env_keys_are_not_used(
    filled: Bucket, aws_env: Path, tmp_path: Path
) -> None:
    (aws_env / "config").write_text("[profile empty]\nregion = us-east-1\n")
    result = _cli(filled.endpoint, filled, tmp_path / "ptms", "--profile", "empty")
    assert_refused(
        result, 0, tmp_path / "ptms", "profile 'empty' has no credentials", "AWS_ACCESS_KEY_ID"
    )
    assert "pass --profile" not in result.stderr


def test_an_endpoint_holding_the_bucket_in_its_host_gets_a_hint() -> None:
    from botocore.exceptions import ClientError

    from icanhazmodel._s3 import S3Options
    from icanhazmodel._storeerrors import run_errors

    options = S3Options(bucket="models", endpoint_url="https://models.s3.eu-west-1.amazonaws.com")
    error = ClientError(
        {"Error": {"Code": "NoSuchKey", "Message": "The specified key does not exist."}},
        "ListObjectsV2",
    )
    with pytest.raises(icanhazmodel.S3Error, match="already names bucket 'models' in its host"):  # noqa: SIM117
        with run_errors(options, "listing s3://models/x/"):
            raise error
    plain = S3Options(bucket="models", endpoint_url="https://s3.eu-west-1.amazonaws.com")
    with pytest.raises(icanhazmodel.S3Error) as raised:  # noqa: SIM117
        with run_errors(plain, "listing s3://models/x/"):
            raise error
    assert "its host" not in str(raised.value)
