"""A ListObjectsV2 page, read from S3's XML straight into RemoteObjects.

botocore spends ~0.065 ms of CPU per listed key (its generic shape parser,
and a second parse of every 200 answer looking for an embedded error); on a
prefix of 20,000 small objects that is more than a second in the process
that must also plan and dispatch. This reads the few fields a run uses.

Two readers. The quick one takes the page as S3 writes it (no namespace
prefixes, no CDATA or comments, every object with one Key, Size, ETag and
LastModified, URL-encoded keys) with a few C-level scans, in ~2 us per key;
on anything else it steps aside for ElementTree (~7 us per key), which
reads any well-formed page by local names. Anything that one does not
recognise is an error, so the caller can hand the page to botocore rather
than guess.
"""

from __future__ import annotations

import bisect
import dataclasses
import operator
import re
from dataclasses import dataclass, field
from itertools import repeat
from urllib.parse import unquote_plus
from xml.etree import ElementTree

from ._contract import truncated_without_token
from ._models import RemoteObject
from ._objects import posix_time, strip_quotes


class NotAListing(ValueError):
    """The answer is not a ListObjectsV2 page this parser can vouch for."""


@dataclass(frozen=True, slots=True)
class ListPage:
    objects: list[RemoteObject]
    next_token: str | None  # None: this was the last page of this request's chain
    prefixes: list[str] = field(default_factory=list)  # CommonPrefixes, with a delimiter
    more_to_come: bool = False  # pages follow from other chains (a fanned-out listing)
    cut: bool = False  # objects at or after the key it was read *below* were left out

    @property
    def more(self) -> bool:
        """Whether more objects follow this page."""
        return self.next_token is not None or self.more_to_come


def _local(tag: str) -> str:
    return tag[tag.index("}") + 1 :] if tag[:1] == "{" else tag


def parse_list_page(body: bytes, below: str | None = None) -> ListPage:
    """The objects and continuation token of one ListObjectsV2 answer (with
    *below*, only the objects whose keys sort before it).

    Keys are URL-decoded when the answer says it used ``EncodingType=url``
    (which the request always asks for, as botocore does: XML 1.0 cannot
    carry every character a key may hold).
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    page = quick_list_page(text, below) if text is not None else None
    return page if page is not None else cut_below(tree_list_page(body), below)


def cut_below(page: ListPage, below: str | None) -> ListPage:
    """*page* without the objects at or after the key *below* (keys come in order)."""
    if below is None or not page.objects or page.objects[-1].key < below:
        return page
    end = bisect.bisect_left([o.key for o in page.objects], below)
    return dataclasses.replace(page, objects=page.objects[:end], cut=True)


def _field(name: str) -> re.Pattern[str]:
    return re.compile(f"<{name}>([^<]*)</{name}>")


_KEY, _SIZE, _ETAG, _MODIFIED = map(_field, ("Key", "Size", "ETag", "LastModified"))
_ALGORITHM, _TRUNCATED, _TOKEN = map(
    _field, ("ChecksumAlgorithm", "IsTruncated", "NextContinuationToken")
)
_ENCODING = _field("EncodingType")
_COMMON = re.compile(r"<CommonPrefixes>\s*<Prefix>([^<]*)</Prefix>\s*</CommonPrefixes>")
_ROOT = re.compile(r"\A\s*(?:<\?xml ([^<>]*)\?>)?\s*<ListBucketResult[\s>]")
_ENCODING_DECLARED = re.compile(r"""encoding\s*=\s*["']([^"']*)["']""")


def quick_list_page(text: str, below: str | None = None) -> ListPage | None:
    """The page, read by scanning for the fields, if it is written the way
    S3 writes it; None where it is not sure (ElementTree then reads it).

    With *below*, objects are made only for the keys that sort before it: a
    chain of a fanned-out listing reads past its range's end on its last
    page, and making those objects would be a third of the work.
    """
    # Each check looks for one rare character first (a memchr), and scans
    # for the two-character sign only where that character is there: the
    # scans for "<!" and "<?" cost 0.2 ms a page each, as '<' is everywhere.
    root = _ROOT.match(text)
    if (
        root is None  # another root
        or not _utf8_declared(root.group(1))  # the bytes mean other characters
        or ("!" in text and "<!" in text)  # CDATA, a comment, a doctype
        or (text.find("?", root.end()) >= 0 and text.find("<?", 1) >= 0)  # an instruction
        or "\r" in text  # XML reads "\r\n" as "\n": line ends are the parser's
        or "xmlns:" in text  # namespace prefixes (each must be declared)
        or not text.rstrip().endswith("</ListBucketResult>")  # a cut-short answer
    ):
        return None
    # With no prefixes, an element this does not match is one with
    # attributes, or empty (<Key/>); one missing or repeated in any object
    # breaks a count: each case is the parser's.
    count = text.count("<Contents")
    keys = _KEY.findall(text)
    sizes = _SIZE.findall(text)
    etags = _ETAG.findall(text)
    modified = _MODIFIED.findall(text)
    if not count == len(keys) == len(sizes) == len(etags) == len(modified):
        return None
    # No entity but the ETags' quotes: every '&' must be one of those. Counted
    # within the ETags (a fifth of the page), not over the whole page.
    if text.count("&") != "".join(etags).count("&quot;"):
        return None
    truncated = _TRUNCATED.findall(text)
    tokens = _TOKEN.findall(text)
    encodings = _ENCODING.findall(text)
    commons = _COMMON.findall(text)
    if (
        len(truncated) != 1
        or len(tokens) != text.count("<NextContinuationToken")
        or len(tokens) > 1
        or len(encodings) != text.count("<EncodingType")
        or encodings not in ([], ["url"])
        or len(commons) != text.count("<CommonPrefixes")
    ):
        return None
    url_encoded = bool(encodings)
    if url_encoded:
        keys = [unquote_plus(k) if "%" in k or "+" in k else k for k in keys]
    end = len(keys) if below is None else bisect.bisect_left(keys, below)
    # Whole columns at a time (map runs in C); objects only below *below*.
    try:
        numbers = list(map(int, sizes[:end]))
        # Objects written together share their LastModified.
        stamps = {when: posix_time(when) for when in set(modified[:end])}
        algorithms = (
            _algorithms_by_object(text)[:end] if "<ChecksumAlgorithm" in text else [()] * end
        )
    except (ValueError, IndexError):
        return None  # a Size that is no number, an algorithm outside every object
    if numbers and min(numbers) < 0:
        return None
    objects = list(
        map(
            RemoteObject,
            keys[:end],
            numbers,
            map(_unquoted_etag, etags[:end]),
            map(stamps.__getitem__, modified[:end]),
            algorithms,
        )
    )
    prefixes = [unquote_plus(p) if url_encoded else p for p in commons]
    if any(not p for p in prefixes):
        return None
    flag = truncated[0].strip().lower()
    if flag == "false":
        return ListPage(objects, None, prefixes, cut=end < len(keys))
    if flag != "true" or not tokens or not tokens[0]:
        return None
    return ListPage(objects, tokens[0], prefixes, cut=end < len(keys))


def _utf8_declared(declaration: str | None) -> bool:
    """Whether an XML declaration leaves the page in UTF-8 (what the text
    was decoded as); another encoding is the parser's to apply."""
    if not declaration or "encoding" not in declaration:
        return True
    declared = _ENCODING_DECLARED.search(declaration)
    return declared is not None and declared[1].lower().replace("_", "-") in ("utf-8", "utf8")


def _unquoted_etag(etag: str) -> str:
    if len(etag) >= 12 and etag.startswith("&quot;") and etag.endswith("&quot;"):
        return etag[6:-6]  # as S3 writes it
    return strip_quotes(etag.replace("&quot;", '"'))


def _algorithms_by_object(text: str) -> list[tuple[str, ...]]:
    """Each object's ChecksumAlgorithm values (S3 lists one or more per object)."""
    if text.count("<ChecksumAlgorithm") != text.count("<ChecksumAlgorithm>"):
        raise IndexError("a ChecksumAlgorithm with attributes")
    starts = list(map(re.Match.start, re.finditer("<Contents>", text)))
    ends = list(map(re.Match.start, re.finditer("</Contents>", text)))
    matches = list(_ALGORITHM.finditer(text))
    at = list(map(re.Match.start, matches))
    # S3 lists one algorithm per object (CRC64NVME, for anything uploaded by
    # a current SDK). If the i-th lies within the i-th object, before the
    # next one starts, for every i, each object has exactly one: checked and
    # paired in C, not per match, with the same outcome as the loop below.
    if (
        len(at) == len(starts) == len(ends)
        and all(map(operator.lt, starts, at))
        and all(map(operator.lt, at, ends))
        and all(map(operator.lt, at, starts[1:]))
    ):
        return list(zip(map(re.Match.group, matches, repeat(1))))
    found: list[list[str]] = [[] for _ in starts]
    for match in matches:
        i = bisect.bisect_right(starts, match.start()) - 1
        if i < 0 or match.start() > ends[i]:
            raise IndexError("a ChecksumAlgorithm outside every object")
        found[i].append(match.group(1))
    return [tuple(values) for values in found]


def tree_list_page(body: bytes) -> ListPage:
    """The page as ElementTree reads it: any well-formed ListObjectsV2 answer."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise NotAListing(f"not XML: {exc}") from None
    if _local(root.tag) != "ListBucketResult":
        raise NotAListing(f"a <{_local(root.tag)}> document, not a listing")
    # By local name: stores differ on the namespace (s3rver uses another one).
    url_encoded = any(_local(e.tag) == "EncodingType" and e.text == "url" for e in root)
    truncated: str | None = None
    token: str | None = None
    objects: list[RemoteObject] = []
    prefixes: list[str] = []
    for element in root:
        name = _local(element.tag)
        if name == "Contents":
            objects.append(_object(element, url_encoded))
        elif name == "CommonPrefixes":
            # By local name, as everywhere here: stores differ on the namespace.
            prefix = next((c.text for c in element if _local(c.tag) == "Prefix"), None)
            if not prefix:
                raise NotAListing("a CommonPrefixes without a Prefix")
            prefixes.append(unquote_plus(prefix) if url_encoded else prefix)
        elif name == "IsTruncated":
            truncated = (element.text or "").strip().lower()
        elif name == "NextContinuationToken":
            token = element.text or None
    if truncated not in ("true", "false"):
        raise NotAListing("a listing without IsTruncated")
    if truncated == "false":
        return ListPage(objects, None, prefixes)
    if not token:
        raise truncated_without_token()
    return ListPage(objects, token, prefixes)


def _object(element: ElementTree.Element, url_encoded: bool) -> RemoteObject:
    key: str | None = None
    size = 0
    etag = ""
    modified = ""
    algorithms: list[str] = []
    for child in element:
        name = _local(child.tag)
        text = child.text or ""
        if name == "Key":
            key = unquote_plus(text) if url_encoded else text
        elif name == "Size":
            try:
                size = int(text)
            except ValueError:
                raise NotAListing(f"a Size of {text[:40]!r}") from None
            if size < 0:
                raise NotAListing(f"a Size of {size}")
        elif name == "ETag":
            etag = strip_quotes(text)
        elif name == "LastModified":
            modified = text
        elif name == "ChecksumAlgorithm":
            algorithms.append(text)
    if key is None:
        raise NotAListing("an object without a Key")
    return RemoteObject(
        key=key,
        size=size,
        etag=etag,
        last_modified=posix_time(modified),
        checksum_algorithms=tuple(algorithms),
    )
