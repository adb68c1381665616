"""Boundaries for a flat stretch of keys, guessed from a sample of them.

A prefix of a million files side by side (images/000000001.jpg, ...) has
no folders to cut its listing at. But listing ranges may be cut at any
string: a range's chain lists from just before its low end and stops at its
high end, whatever keys do or do not fall between. So the boundaries are
guessed: the sample's keys (two pages, in order) are read as numbers in the
alphabet they use (after their common prefix), and the next boundaries are
spaced as far apart as CHAIN_KEYS of them took. A poor guess costs requests
or balance, never a key: every key lands in exactly one range.

Pure functions and one small class: no I/O here.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Sequence

MIN_SAMPLE = 100  # keys needed to guess from
MAX_WIDTH = 16  # characters of a key (after the common prefix) that count
SLACK = 4  # characters of the sample's shared start that may still change
# Printable ASCII only: a boundary is sent as StartAfter, and one made of
# other characters could be no valid UTF-8 (a lone surrogate).
_ASCII = frozenset(map(chr, range(0x20, 0x7F)))


class FlatGuess:
    """Where the next boundaries of a flat stretch fall, as keys go on."""

    chain_keys = 2000  # keys a range is cut to hold (from_sample sets it)

    def __init__(self, common: str, alphabet: str, width: int, start: int, per_key: float) -> None:
        self.common = common
        self._alphabet = alphabet
        self._width = width
        # Digit 0: the key ended; 2i+2: alphabet[i]; 2i+1: a character
        # between alphabet[i-1] and alphabet[i] (one the sample did not use).
        self._base = 2 * len(alphabet) + 2
        self._end = self._base**width
        self.position = start  # the value of the last boundary (or sampled key)
        self.per_key = per_key  # value units per key, as seen so far
        self._keys = 0
        self._span = 0

    @classmethod
    def from_sample(cls, keys: Sequence[str], chain_keys: int, prefix: str) -> FlatGuess | None:
        """The guess from *keys* (sorted, all under *prefix*), or None when
        they say too little."""
        if len(keys) < MIN_SAMPLE:
            return None
        # What all the sample's keys start with, less a few characters: the
        # keys after the sample may differ earlier than its own do (f00100
        # to f00199 go on to f04999).
        shared = os.path.commonprefix([keys[0], keys[-1]])  # noqa: RUF071  (characters, not paths)
        common = max(prefix, shared[: len(shared) - SLACK], key=len)
        suffixes = [key[len(common) :] for key in keys]
        alphabet = "".join(sorted(set("".join(suffixes))))
        if len(alphabet) < 2 or not set(alphabet) <= _ASCII:
            return None
        width = min(MAX_WIDTH, max(map(len, suffixes)))
        guess = cls(common, alphabet, width, 0, 0.0)
        first, last = guess.value(keys[0]), guess.value(keys[-1])
        if last <= first:
            return None
        guess.position = last
        guess.per_key = (last - first) / (len(keys) - 1)
        guess.chain_keys = chain_keys
        return guess

    def value(self, key: str) -> int:
        """*key* as a number, in key order (for keys under the common prefix)."""
        suffix = key[len(self.common) :] if key.startswith(self.common) else ""
        number = 0
        known = True  # every character so far is in the alphabet
        for i in range(self._width):
            digit = 0
            if known and i < len(suffix):
                char = suffix[i]
                at = bisect.bisect_left(self._alphabet, char)
                known = at < len(self._alphabet) and self._alphabet[at] == char
                # A character the sample did not use falls between two that
                # it did; what follows it cannot be placed, and counts as 0.
                digit = 2 * at + 2 if known else 2 * at + 1
            number = number * self._base + digit
        return number

    def key(self, number: int) -> str | None:
        """The smallest string over the alphabet whose value is at least
        *number* (None: none is, within the width)."""
        digits = []
        for _ in range(self._width):
            number, digit = divmod(number, self._base)
            digits.append(digit)
        digits.reverse()
        alphabet = self._alphabet
        chars: list[str] = []
        for i, digit in enumerate(digits):
            if digit == 0:  # the key ends here, or its smallest next character is above
                if any(digits[i + 1 :]):
                    chars.append(alphabet[0])
                break
            if digit % 2 == 0:  # a character of the alphabet
                chars.append(alphabet[digit // 2 - 1])
                continue
            at = digit // 2  # just below alphabet[at]: round up to it
            if at < len(alphabet):
                chars.append(alphabet[at])
                break
            # Above the last character: round up an earlier one.
            while chars and chars[-1] == alphabet[-1]:
                chars.pop()
            if not chars:
                return None
            chars[-1] = alphabet[alphabet.index(chars[-1]) + 1]
            break
        return self.common + "".join(chars)

    def next_boundary(self, after: str) -> str | None:
        """The next boundary past *after*, about chain_keys keys on; None once
        the guess runs past every key under the common prefix."""
        step = max(1, round(self.per_key * self.chain_keys))
        for _ in range(64):  # each turn moves on by a step at least
            self.position += step
            if self.position >= self._end:
                return None
            boundary = self.key(self.position)
            if boundary is None:
                return None
            self.position = max(self.position, self.value(boundary))
            if boundary > after:
                return boundary
        return None

    def learned(self, keys: int, low: str, high: str) -> None:
        """A range [low, high) held *keys* keys: space the next ones by what
        the ranges listed so far held (an empty one widens the step)."""
        self._span += max(0, self.value(high) - self.value(low))
        self._keys += keys
        if self._span:
            self.per_key = self._span / max(self._keys, 0.5)


def just_before(boundary: str) -> str:
    """A StartAfter for listing the keys from *boundary* on: a string that
    sorts before it, with as few keys between as may be."""
    last = boundary[-1]
    if " " < last <= "~":
        return boundary[:-1] + chr(ord(last) - 1) + "~"
    return boundary[:-1]
