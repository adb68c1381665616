"""The direct path's SigV4 signer agrees with botocore's, byte for byte."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given
from hypothesis import strategies as st

from icanhazmodel._sigv4 import canonical_query, sign

NOW = datetime(2026, 11, 28, 6, 0, 0, tzinfo=UTC)


def botocore_authorization(
    url: str, headers: dict[str, str], creds: Credentials, region: str
) -> str:
    request = AWSRequest(method="GET", url=url, headers=headers)
    request.context["timestamp"] = NOW.strftime("%Y%m%dT%H%M%SZ")
    signer = S3SigV4Auth(creds, "s3", region)
    signer._modify_request_before_signing(request)
    canonical = signer.canonical_request(request)
    string_to_sign = signer.string_to_sign(request, canonical)
    signature = signer.signature(string_to_sign, request)
    signed_headers = signer.signed_headers(signer.headers_to_sign(request))
    return (
        f"AWS4-HMAC-SHA256 Credential={signer.scope(request)}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )


keys = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=40,
)
header_values = st.sampled_from([None, "bytes=0-99", '"abc123"', "ENABLED", "requester"])


@given(
    key=keys,
    version=st.one_of(st.none(), st.text("abcXYZ019._-+/=", min_size=1, max_size=20)),
    range_value=header_values,
    if_match=header_values,
    token=st.one_of(st.none(), st.text("ABCdef0123+/=", min_size=1, max_size=30)),
    region=st.sampled_from(["us-east-1", "eu-west-3", "ap-southeast-2"]),
    host=st.sampled_from(["127.0.0.1:4568", "bucket.s3.eu-west-3.amazonaws.com"]),
)
def test_signature_matches_botocore(
    key: str,
    version: str | None,
    range_value: str | None,
    if_match: str | None,
    token: str | None,
    region: str,
    host: str,
) -> None:
    path = "/bucket/" + quote(key, safe="/~")
    query = {"versionId": version} if version else {}
    url = f"http://{host}{path}" + ("?" + canonical_query(query) if query else "")
    headers = {"Accept-Encoding": "identity"}
    if range_value:
        headers["Range"] = range_value
    if if_match:
        headers["If-Match"] = if_match
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)

    ours = sign(
        host=host,
        path=path,
        query=query,
        headers=headers,
        access_key=creds.access_key,
        secret_key=creds.secret_key,
        token=token,
        region=region,
        now=NOW,
    )
    botocore_headers = dict(headers)
    if token:
        botocore_headers["X-Amz-Security-Token"] = token
    botocore_headers["X-Amz-Date"] = NOW.strftime("%Y%m%dT%H%M%SZ")
    assert ours["Authorization"] == botocore_authorization(url, botocore_headers, creds, region)
