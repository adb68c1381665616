"""Starting a run without botocore, where nothing botocore knows can matter.

Importing aioboto3 and building its client costs ~0.25 s of a 0.55 s run
that fetches one small file. Its machinery matters for credential providers
(profiles, SSO, roles, IMDS), S3's endpoint rules and the config file's many
settings; for a plain endpoint given by IP address, static keys from the
environment (or no signing) and a config file that sets nothing but a region,
it decides nothing: the bucket's URL is the endpoint plus the bucket's name
(botocore uses path-style addressing for IP endpoints) and requests are
signed with those keys.

So a run starts on the direct path alone when every condition below holds,
and loads botocore only if S3 answers something the direct path does not
handle (a redirect, an authorization error), exactly as it would mid-run.
Anything unusual, or unknown, means botocore from the start.
"""

from __future__ import annotations

import configparser
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from ._direct import FrozenCredentials, Route, host_header

# Environment variables the conditions below account for; any other AWS_*
# variable (FIPS, dual-stack, retries, endpoint discovery, ...) might change
# what botocore would do, so it sends the run through botocore.
_UNDERSTOOD = frozenset(
    {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",  # read by boto3's callers, not by botocore's session
        "AWS_PROFILE",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",  # the environment's keys win over it
        "AWS_EC2_METADATA_DISABLED",
        "AWS_CA_BUNDLE",
        "AWS_ENDPOINT_URL",  # an explicit endpoint wins over these
        "AWS_ENDPOINT_URL_S3",
        "AWS_MAX_ATTEMPTS",  # botocore's retries: icanhazmodel retries itself
        "AWS_RETRY_MODE",
        "AWS_PAGER",
        "AWS_DEFAULT_OUTPUT",
    }
)
# What a config-file profile may hold for the light start to stand.
_PLAIN_PROFILE_KEYS = frozenset({"region", "output"})
# botocore's own check of a bucket name (VALID_BUCKET in botocore.handlers).
_BUCKET = re.compile(r"^[a-zA-Z0-9.\-_]{1,255}$")
_DEFAULT_SIGNING_REGION = "us-east-1"  # botocore's, for an endpoint without one


@dataclass(frozen=True, slots=True)
class LightStart:
    route: Route
    credentials: FrozenCredentials | None  # None: unsigned requests


def light_start(
    *,
    bucket: str,
    endpoint_url: str | None,
    profile: str | None,
    region: str | None,
    unsigned: bool,
    environ: Mapping[str, str],
) -> LightStart | None:
    """How to reach *bucket* without botocore; None where botocore must decide."""
    if environ.get("ICANHAZMODEL_DIRECT_GETS", "1") == "0":
        return None
    if profile is not None or not _BUCKET.match(bucket):
        return None
    if any(n.startswith("AWS_") and n not in _UNDERSTOOD for n in environ):
        return None
    origin = _ip_endpoint(endpoint_url)
    if origin is None:
        return None
    scheme, netloc = origin
    credentials = None if unsigned else _environment_keys(environ)
    if credentials is None and not unsigned:
        return None
    settings = _profile_settings(environ)
    if settings is None:
        return None
    signing_region = region or environ.get("AWS_DEFAULT_REGION") or settings.get("region")
    return LightStart(
        route=Route(
            scheme=scheme,
            origin=f"{scheme}://{netloc}",
            host=host_header(scheme, netloc),
            base_path=f"/{quote(bucket, safe='')}/",
            region=None if unsigned else signing_region or _DEFAULT_SIGNING_REGION,
        ),
        credentials=credentials,
    )


def _ip_endpoint(endpoint_url: str | None) -> tuple[str, str] | None:
    """(scheme, netloc) of an endpoint given by IP address."""
    if not endpoint_url:
        return None
    try:
        parts = urlsplit(endpoint_url)
        host = parts.hostname or ""
        ipaddress.ip_address(host)
        parts.port  # noqa: B018 - raises for a port out of range
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or parts.path not in ("", "/"):
        return None
    if parts.query or parts.fragment or parts.username or parts.password:
        return None
    return parts.scheme, parts.netloc


def _environment_keys(environ: Mapping[str, str]) -> FrozenCredentials | None:
    """Static keys from the environment, first in botocore's chain."""
    access, secret = environ.get("AWS_ACCESS_KEY_ID"), environ.get("AWS_SECRET_ACCESS_KEY")
    if not access or not secret:
        return None
    return FrozenCredentials(access, secret, environ.get("AWS_SESSION_TOKEN") or None)


def _profile_settings(environ: Mapping[str, str]) -> dict[str, str] | None:
    """The config file's settings for the profile in use, if they are plain:
    {} without a file, None for anything botocore should read itself."""
    path = os.path.expanduser(environ.get("AWS_CONFIG_FILE") or "~/.aws/config")
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except FileNotFoundError:
        return {} if "AWS_PROFILE" not in environ else None
    except (OSError, UnicodeDecodeError):
        return None
    parser = configparser.RawConfigParser()
    try:
        parser.read_string(text)
    except configparser.Error:
        return None  # botocore's turn, and its error message
    profile = environ.get("AWS_PROFILE")
    names = ["default", "profile default"] if profile in (None, "default") else []
    names += [f"profile {profile}"] if profile else []
    found = [name for name in names if parser.has_section(name)]
    if profile and not found:
        return None  # botocore knows whether it exists elsewhere
    if len(found) > 1:
        return None
    settings = dict(parser.items(found[0])) if found else {}
    if not set(settings) <= _PLAIN_PROFILE_KEYS:
        return None
    return settings
