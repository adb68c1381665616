"""AWS Signature Version 4 for the direct GET path, as a pure function.

botocore's signer goes through its generic request machinery (headers kept
in an ``email.message`` object, URL re-parsing, logging) and costs about
0.3 ms per request; this one signs the only request shape the direct path
sends, a body-less GET, in a few tens of microseconds. It follows the
published algorithm step by step, and the tests check it against botocore's
signer on arbitrary keys, headers and credentials.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from urllib.parse import quote

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
ALGORITHM = "AWS4-HMAC-SHA256"


@lru_cache(maxsize=16)
def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    """The day's derived key: four HMACs, computed once per day and scope."""
    key = ("AWS4" + secret_key).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def canonical_query(params: Mapping[str, str]) -> str:
    return "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params.items())
    )


def sign(
    *,
    host: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    access_key: str,
    secret_key: str,
    token: str | None,
    region: str,
    now: datetime,
    service: str = "s3",
    method: str = "GET",
) -> dict[str, str]:
    """Headers to send with a body-less GET (or HEAD), ``Authorization`` included.

    *path* is the URI path exactly as sent (already percent-encoded; S3 does
    not normalise it). *headers* are the request's own headers; all of them
    are signed, as botocore does.
    """
    timestamp = now.strftime("%Y%m%dT%H%M%SZ")
    date = timestamp[:8]
    out = dict(headers)
    out["x-amz-date"] = timestamp
    out["x-amz-content-sha256"] = EMPTY_SHA256
    if token:
        out["x-amz-security-token"] = token
    signed = {name.lower(): " ".join(str(value).split()) for name, value in out.items()}
    signed["host"] = host
    names = sorted(signed)
    canonical_request = "\n".join(
        [
            method,
            path,
            canonical_query(query),
            "".join(f"{name}:{signed[name]}\n" for name in names),
            ";".join(names),
            EMPTY_SHA256,
        ]
    )
    scope = f"{date}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        [ALGORITHM, timestamp, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    # One-shot: hmac.new builds two hash objects in Python first.
    signature = hmac.digest(
        signing_key(secret_key, date, region, service), string_to_sign.encode(), "sha256"
    ).hex()
    out["Authorization"] = (
        f"{ALGORITHM} Credential={access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return out
