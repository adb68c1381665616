"""The listing contract, and what a run does when a store breaks it.

A mirror is only complete if the listing is: every key under the prefix,
once. ListObjectsV2 promises that keys come in strictly increasing order,
within a page and across pages, that a truncated page carries a continuation
token, and that following the tokens ends. A store that breaks any of these
(a page that repeats the last key, one that ignores ``start-after``, a token
cycle, a page out of order) would otherwise make a run fetch a key twice,
miss keys, or list forever. So it is checked on every path, sequential or
fanned out, and a break stops the run with one line naming what the store
did: never a silent partial mirror, never a hang.

Pure: no I/O. The S3 adapter and the listing put the ``what`` around the
:class:`BrokenListing` raised here.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

from ._models import RemoteObject


class BrokenListing(Exception):
    """The store broke the listing contract; str() says how."""


class TokenChain:
    """One chain of listing requests: every continuation token it is given is new."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def follow(self, token: str | None) -> str | None:
        """*token* (None: the chain has ended); a token seen before is a loop."""
        if token is None:
            return None
        if token in self._seen:
            raise BrokenListing(
                f"sent the continuation token {token[:60]!r} a second time "
                "(its listing would go round forever)"
            )
        self._seen.add(token)
        return token


def truncated_without_token() -> BrokenListing:
    return BrokenListing(
        "said a page was truncated but sent no continuation token (the rest of the "
        "listing cannot be asked for)"
    )


class KeyOrder:
    """Keys handed to the planner strictly increase, across every page."""

    def __init__(self) -> None:
        self._last: str | None = None

    def check(self, objects: Sequence[RemoteObject]) -> None:
        if not objects:
            return
        keys = [o.key for o in objects]
        ordered = all(map(operator.lt, keys, keys[1:]))  # compared in C: ~20 ns a key
        if ordered and (self._last is None or self._last < keys[0]):
            self._last = keys[-1]
            return
        previous = self._last
        for key in keys:
            if previous is not None and key <= previous:
                raise BrokenListing(
                    f"listed {key!r} twice"
                    if key == previous
                    else f"listed {key!r} after {previous!r} (keys must come in order)"
                )
            previous = key
