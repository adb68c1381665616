"""Listings: read straight from S3's XML, and the same as botocore's.

The direct path lists (and HEADs the exact key) without botocore; any answer
it cannot read hands the listing to botocore from that page on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote_plus
from xml.sax.saxutils import escape

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import icanhazmodel
from icanhazmodel._contract import BrokenListing
from icanhazmodel._keys import RefusedKey, key_parts
from icanhazmodel._listxml import (
    ListPage,
    NotAListing,
    _algorithms_by_object,
    cut_below,
    parse_list_page,
    quick_list_page,
    tree_list_page,
)
from icanhazmodel._models import RemoteObject
from icanhazmodel._s3 import S3Options, open_s3
from tests.conftest import Bucket, new_bucket
from tests.faultproxy import Fault, FaultProxy, fault_proxy

NS = "http://s3.amazonaws.com/doc/2006-03-01/"


def listing_xml(
    keys: list[str], *, url_encoded: bool, truncated: bool = False, token: str | None = None
) -> bytes:
    contents = "".join(
        "<Contents>"
        f"<Key>{quote_plus(key, safe='/') if url_encoded else escape(key)}</Key>"
        "<LastModified>2026-11-28T06:00:00.000Z</LastModified>"
        f'<ETag>"{i:032x}"</ETag><Size>{i}</Size>'
        "<ChecksumAlgorithm>CRC32</ChecksumAlgorithm><ChecksumAlgorithm>SHA1</ChecksumAlgorithm>"
        "<StorageClass>STANDARD</StorageClass></Contents>"
        for i, key in enumerate(keys)
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="{NS}">'
        f"<Name>b</Name><Prefix></Prefix><KeyCount>{len(keys)}</KeyCount><MaxKeys>1000</MaxKeys>"
        + ("<EncodingType>url</EncodingType>" if url_encoded else "")
        + f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"
        + (f"<NextContinuationToken>{escape(token)}</NextContinuationToken>" if token else "")
        + contents
        + "</ListBucketResult>"
    ).encode()


# Keys as S3 allows them: any unicode but NUL-free; XML 1.0 cannot carry
# control characters, hence EncodingType=url.
KEYS = st.lists(
    st.text(st.characters(exclude_characters="\x00", codec="utf-8"), min_size=1, max_size=40),
    max_size=20,
)


@given(KEYS)
@settings(max_examples=300)
def test_url_encoded_keys_come_back_exactly(keys: list[str]) -> None:
    page = parse_list_page(listing_xml(keys, url_encoded=True))
    assert [o.key for o in page.objects] == keys
    assert page.next_token is None


def test_every_field_the_run_uses_is_read() -> None:
    page = parse_list_page(
        listing_xml(["a b+c", "d"], url_encoded=False, truncated=True, token="tok/=+")
    )
    assert page.next_token == "tok/=+"
    first = page.objects[0]
    assert first == RemoteObject(
        key="a b+c",  # not URL-decoded: the answer did not say it was encoded
        size=0,
        etag="0" * 32,
        last_modified=first.last_modified,
        checksum_algorithms=("CRC32", "SHA1"),
    )
    assert first.last_modified == pytest.approx(1795845600.0)
    assert page.objects[1].size == 1


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body>Welcome to the hotel wifi</body></html>",
        b"not xml at all",
        b'<?xml version="1.0"?><Error><Code>AccessDenied</Code></Error>',
        f'<ListBucketResult xmlns="{NS}"><Contents><Key>a</Key></Contents>'
        "</ListBucketResult>".encode(),
        f'<ListBucketResult xmlns="{NS}"><IsTruncated>false</IsTruncated>'
        "<Contents><Size>3</Size></Contents></ListBucketResult>".encode(),
        f'<ListBucketResult xmlns="{NS}"><IsTruncated>false</IsTruncated>'
        "<Contents><Key>a</Key><Size>-1</Size></Contents></ListBucketResult>".encode(),
    ],
    ids=["portal", "text", "error", "no-truncated", "no-key", "negative-size"],
)
def test_anything_but_a_readable_listing_is_refused(body: bytes) -> None:
    with pytest.raises(NotAListing):
        parse_list_page(body)


def test_a_truncated_page_without_a_token_breaks_the_contract() -> None:
    """Readable, but the rest of the listing cannot be asked for: not a page
    for botocore to read instead, a store to stop at (see _contract)."""
    body = f'<ListBucketResult xmlns="{NS}"><IsTruncated>true</IsTruncated></ListBucketResult>'
    with pytest.raises(BrokenListing, match="no continuation token"):
        parse_list_page(body.encode())


# -- against moto, over HTTP ---------------------------------------------------------


ODD_KEYS = [
    "p/plain.bin",
    "p/with space.txt",
    "p/plus+sign",
    "p/percent%20literal",
    "p/amp&lt;<tag>",
    "p/ünïcødé/файл",
    "p/ctrl\x01char",
    "p/tab\tchar",
    "p/trailing.",
    "p/q?x=1#frag",
]


async def listed(endpoint: str, bucket: str, prefix: str) -> list[RemoteObject]:
    async with open_s3(S3Options(bucket=bucket, endpoint_url=endpoint)) as s3:
        pages: AsyncIterator[ListPage] = s3.list_pages(prefix)
        return [obj async for page in pages for obj in page.objects]


@pytest.fixture
def proxy(bucket: Bucket) -> Iterator[FaultProxy]:
    with fault_proxy(bucket.endpoint) as p:
        yield p


def listing_requests(proxy: FaultProxy, bucket: Bucket) -> list[str]:
    """The User-Agent of each listing request, in order."""
    return [
        s.headers.get("user-agent", "")
        for s in proxy.requests("GET")
        if s.path == f"/{bucket.name}"
    ]


def test_the_direct_listing_matches_botocores_over_pages(
    bucket: Bucket, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = ODD_KEYS + [f"p/many/{i:05d}" for i in range(1100)]  # two pages
    with ThreadPoolExecutor(16) as pool:
        crc32 = {"ChecksumAlgorithm": "CRC32"}
        puts = [
            pool.submit(bucket.put, key, b"%d" % i, **(crc32 if i % 3 else {}))
            for i, key in enumerate(keys)
        ]
        for put in puts:
            put.result()
    direct = asyncio.run(listed(proxy.endpoint, bucket.name, "p/"))
    agents = listing_requests(proxy, bucket)
    assert len(agents) == 2
    assert all(a.startswith("icanhazmodel/") for a in agents), agents
    monkeypatch.setenv("ICANHAZMODEL_DIRECT_GETS", "0")
    through_botocore = asyncio.run(listed(proxy.endpoint, bucket.name, "p/"))
    assert not any(a.startswith("icanhazmodel/") for a in listing_requests(proxy, bucket)[2:])
    assert direct == through_botocore
    assert sorted(o.key for o in direct) == sorted(keys)
    assert any(o.checksum_algorithms == ("CRC32",) for o in direct)


PAGED_KEYS = [f"p/{i:05d}" for i in range(1005)]


@pytest.fixture(scope="module")
def paged(moto_endpoint: str) -> Bucket:
    """Two listing pages of keys, filled once for the tests that only read them."""
    return new_bucket(moto_endpoint, {key: key.encode() for key in PAGED_KEYS})


@pytest.mark.parametrize("failing_page", [1, 2])
@pytest.mark.parametrize("answer", ["400 InvalidRequest", "503 SlowDown"])
def test_a_listing_page_that_fails_goes_on_without_holes(
    paged: Bucket, tmp_path: Path, failing_page: int, answer: str
) -> None:
    """An answer the direct path cannot take (a 400) sends the listing to
    botocore from that page on; a transient one (a 503) is retried, on the
    direct path, which stays in use (issue 21: retrying, not switching)."""
    with fault_proxy(paged.endpoint) as proxy:
        _list_with_one_failure(paged, proxy, tmp_path, failing_page, answer)


def _list_with_one_failure(
    bucket: Bucket, proxy: FaultProxy, tmp_path: Path, failing_page: int, answer: str
) -> None:
    keys = PAGED_KEYS
    if failing_page == 2:
        # Let the first listing through, then fail the next one once.
        first_done = Fault(exact_path=f"/{bucket.name}", times=1)
        proxy.add(first_done)
    status, code = answer.split()
    proxy.add(Fault(exact_path=f"/{bucket.name}", error=(int(status), code), times=1))
    # The listing is what is under test: a plan lists as a fetch does, without the GETs.
    plan = asyncio.run(
        icanhazmodel.plan(bucket=bucket.name, key="p", dest=tmp_path, endpoint_url=proxy.endpoint)
    )
    assert [o.key for o in plan.objects] == keys  # every key, once, in order
    agents = listing_requests(proxy, bucket)
    direct = [a.startswith("icanhazmodel/") for a in agents]
    assert len(direct) >= failing_page + 1
    if status == "503":
        assert all(direct)
        return
    # The direct path asked until the failure; botocore asked from there on.
    assert direct == [True] * failing_page + [False] * (len(direct) - failing_page)


def test_the_exact_key_is_looked_up_directly(
    bucket: Bucket, proxy: FaultProxy, tmp_path: Path
) -> None:
    bucket.put("models/config.yaml", b"a: 1\n")
    result = asyncio.run(
        icanhazmodel.fetch(
            bucket=bucket.name, key="models/config.yaml", dest=tmp_path, endpoint_url=proxy.endpoint
        )
    )
    assert result.downloaded == 1
    heads = proxy.requests("HEAD", "models/config.yaml")
    assert heads
    assert all(h.headers.get("user-agent", "").startswith("icanhazmodel/") for h in heads)
    assert not listing_requests(proxy, bucket)  # found by HEAD: no listing needed


def test_common_prefixes_are_read_and_decoded() -> None:
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?>'
        b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        b"<EncodingType>url</EncodingType><IsTruncated>false</IsTruncated>"
        b"<Contents><Key>p/a%2Bb</Key><Size>1</Size><ETag>&quot;e&quot;</ETag>"
        b"<LastModified>2026-01-01T00:00:00.000Z</LastModified></Contents>"
        b"<CommonPrefixes><Prefix>p/d%C3%A9/</Prefix></CommonPrefixes>"
        b"<CommonPrefixes><Prefix>p/e+f/</Prefix></CommonPrefixes>"
        b"</ListBucketResult>"
    )
    page = parse_list_page(body)
    assert [o.key for o in page.objects] == ["p/a+b"]
    assert page.prefixes == ["p/d\u00e9/", "p/e f/"]
    assert not page.more
    with pytest.raises(NotAListing):
        parse_list_page(body.replace(b"<Prefix>p/e+f/</Prefix>", b""))
    # s3rver answers in another namespace: names count, not namespaces.
    other = body.replace(b"http://s3.amazonaws.com/doc/", b"http://doc.s3.amazonaws.com/")
    assert parse_list_page(other).prefixes == page.prefixes


# -- the quick reader against ElementTree --------------------------------------------

FIELDS = ("Key", "LastModified", "ETag", "Size", "StorageClass")


@st.composite
def s3_shaped_pages(draw: st.DrawFn) -> tuple[str, bool]:
    """A ListObjectsV2 answer as stores write it, in any order and layout:
    (the XML, whether it is written the way the quick reader expects)."""
    url = draw(st.booleans())
    keys = draw(
        st.lists(
            st.text(
                st.characters(codec="ascii", exclude_characters="\x00"), min_size=1, max_size=12
            ),
            max_size=6,
            unique=True,
        )
    )
    gap = draw(st.sampled_from(["", "\n  ", " "]))
    objects = []
    for i, key in enumerate(sorted(keys)):
        fields = {
            "Key": quote_plus(key, safe="/") if url else escape(key),
            "LastModified": draw(
                st.sampled_from(["2026-11-28T06:00:00.000Z", "2026-01-01T00:00:00Z"])
            ),
            "ETag": f"&quot;{i:032x}&quot;",
            "Size": str(draw(st.integers(0, 2**40))),
            "StorageClass": "STANDARD",
        }
        order = draw(st.permutations(list(fields)))
        extra = draw(st.lists(st.sampled_from(["CRC32", "CRC64NVME", "SHA256"]), max_size=2))
        parts = [f"<{name}>{fields[name]}</{name}>" for name in order]
        parts += [f"<ChecksumAlgorithm>{a}</ChecksumAlgorithm>" for a in extra]
        if draw(st.booleans()):
            parts.append(
                "<Owner><ID>o</ID><DisplayName>d</DisplayName></Owner><ChecksumType>FULL_OBJECT</ChecksumType>"
            )
        objects.append("<Contents>" + gap.join(draw(st.permutations(parts))) + "</Contents>")
    commons = [
        f"<CommonPrefixes>{gap}<Prefix>{quote_plus(c, safe='/') if url else c}</Prefix>"
        f"{gap}</CommonPrefixes>"
        for c in draw(st.lists(st.sampled_from(["d/", "é f/", "x+y/"]), max_size=2, unique=True))
    ]
    truncated = draw(st.booleans())
    top = [
        "<Name>b</Name>",
        "<Prefix></Prefix>",
        f"<IsTruncated>{str(truncated).lower()}</IsTruncated>",
    ]
    if url:
        top.append("<EncodingType>url</EncodingType>")
    if truncated:
        top.append(
            f"<NextContinuationToken>{draw(st.sampled_from(['t0k/=', 'abc+d']))}"
            "</NextContinuationToken>"
        )
    # Top-level fields anywhere among the objects, which stay in key order.
    elements = objects + commons
    for element in draw(st.permutations(top)):
        elements.insert(draw(st.integers(0, len(elements))), element)
    body = gap.join(elements)
    # Unencoded keys with what XML must escape, or cannot carry, are the parser's.
    expected = url or all(c >= " " and c not in "&<>" for k in keys for c in k)
    declaration = draw(
        st.sampled_from(
            [
                '<?xml version="1.0" encoding="UTF-8"?>\n',
                "",
                # Another encoding: the same bytes may mean other characters,
                # so the page is ElementTree's to read.
                '<?xml version="1.0" encoding="ISO-8859-1"?>\n',
            ]
        )
    )
    expected = expected and "ISO" not in declaration
    return (
        f'{declaration}<ListBucketResult xmlns="{NS}">{gap}{body}{gap}</ListBucketResult>',
        expected,
    )


@settings(max_examples=400)
@given(page=s3_shaped_pages(), below=st.one_of(st.none(), st.text("%+ /0Aaz~", max_size=3)))
def test_the_quick_reader_reads_what_elementtree_reads(
    page: tuple[str, bool], below: str | None
) -> None:
    """Also when told to leave out the keys from *below* on (a fanned-out
    listing's chain at the end of its range)."""
    text, quick_expected = page
    quick = quick_list_page(text, below)
    try:
        tree: ListPage | None = cut_below(tree_list_page(text.encode()), below)
    except NotAListing:  # not XML: an unencoded key with a character XML cannot carry
        tree = None
    if quick is not None and tree is None:
        # Such a page is no XML at all; the quick reader takes those keys as
        # sent, and every one of them is refused before it could be written.
        odd = [o.key for o in quick.objects if any(c < " " for c in o.key)]
        assert odd or below is not None
        for key, is_dir in itertools.product(odd, (False, True)):
            with pytest.raises(RefusedKey):
                key_parts(key, is_dir_marker=is_dir)
    else:
        assert quick is None or quick == tree
    if quick_expected:  # pages as S3 writes them take the quick path
        assert quick is not None
    if quick is not None and below is not None:
        assert all(o.key < below for o in quick.objects)


# Each of these is well-formed and reads fine by ElementTree; the quick
# reader must step aside rather than read it differently.
ODD_WRITINGS = {
    "namespace prefix on an object": lambda t: t.replace(
        "<Contents>", '<s3:Contents xmlns:s3="x">', 1
    ).replace("</Contents>", "</s3:Contents>", 1),
    "namespace prefix on a field": lambda t: t.replace(
        "<Size>", '<s3:Size xmlns:s3="x">', 1
    ).replace("</Size>", "</s3:Size>", 1),
    "prefixed root": lambda t: t.replace(
        "<ListBucketResult", '<s3:ListBucketResult xmlns:s3="x"'
    ).replace("</ListBucketResult>", "</s3:ListBucketResult>"),
    "attribute on a key": lambda t: t.replace("<Key>", '<Key a="1">', 1),
    "CDATA key": lambda t: t.replace("<Key>p/a</Key>", "<Key><![CDATA[p/a]]></Key>"),
    "comment": lambda t: t.replace("<Size>", "<!-- hi --><Size>", 1),
    "entity in a key": lambda t: t.replace("<Key>p/a</Key>", "<Key>p/&#97;</Key>"),
    "ETag as a numeric reference": lambda t: t.replace("&quot;", "&#34;"),
    "carriage return": lambda t: t.replace("<Key>p/a</Key>", "<Key>p/a\r\nb</Key>"),
    "a second Size": lambda t: t.replace("<Size>1</Size>", "<Size>1</Size><Size>2</Size>", 1),
    "a missing ETag": lambda t: t.replace("<ETag>&quot;e1&quot;</ETag>", ""),
    "prefixed token": lambda t: t.replace(
        "<IsTruncated>false",
        '<s3:NextContinuationToken xmlns:s3="x">t</s3:NextContinuationToken><IsTruncated>true',
    ),
    "prefixed encoding type": lambda t: t.replace(
        "<EncodingType>url</EncodingType>", '<s3:EncodingType xmlns:s3="x">url</s3:EncodingType>'
    ),
}
PLAIN = (
    f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="{NS}">'
    "<EncodingType>url</EncodingType><IsTruncated>false</IsTruncated>"
    "<Contents><Key>p/a</Key><Size>1</Size><ETag>&quot;e1&quot;</ETag>"
    "<LastModified>2026-01-01T00:00:00.000Z</LastModified></Contents>"
    "<Contents><Key>p/b%20c</Key><Size>2</Size><ETag>&quot;e2&quot;</ETag>"
    "<LastModified>2026-01-01T00:00:00.000Z</LastModified></Contents>"
    "</ListBucketResult>"
)


@pytest.mark.parametrize("name", ODD_WRITINGS)
def test_the_quick_reader_steps_aside_for_anything_unusual(name: str) -> None:
    assert quick_list_page(PLAIN) == tree_list_page(PLAIN.encode())
    odd = ODD_WRITINGS[name](PLAIN)
    assert odd != PLAIN
    assert quick_list_page(odd) is None
    with contextlib.suppress(NotAListing):  # what ElementTree makes of it is its own business
        parse_list_page(odd.encode())


def test_checksum_algorithms_go_to_the_object_that_holds_them() -> None:
    """One per object is paired by position; anything else, by where each lies."""

    def algo(name: str) -> str:
        return f"<ChecksumAlgorithm>{name}</ChecksumAlgorithm>"

    one_each = f"<Contents>{algo('A')}</Contents><Contents><K/>{algo('B')}</Contents>"
    assert _algorithms_by_object(one_each) == [("A",), ("B",)]
    uneven = f"<Contents>{algo('A')}{algo('B')}</Contents><Contents></Contents>"
    assert _algorithms_by_object(uneven) == [("A", "B"), ()]
    # As many as objects, each before its object's end, but both in the second.
    nested = f"<Contents><Contents>{algo('A')}{algo('B')}</Contents></Contents>"
    assert _algorithms_by_object(nested) == [(), ("A", "B")]
