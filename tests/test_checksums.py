"""Pure checksum logic: which check applies, and CRCs combined across ranges."""

from __future__ import annotations

import base64
import hashlib
import itertools
import subprocess
import sys
import zlib

import pytest
from awscrt import checksums as crt
from hypothesis import given
from hypothesis import strategies as st

from icanhazmodel import _crcpy
from icanhazmodel._checksums import (
    PY_CRC_BUDGET,
    Digest,
    choose,
    crc_bytes,
    crc_of_ranges,
    crc_update,
)
from icanhazmodel._models import RemoteObject, Verification
from icanhazmodel._transfer import SMALL_OBJECT, computes_crt_crc

CRCS = {"CRC32": zlib.crc32, "CRC32C": crt.crc32c, "CRC64NVME": crt.crc64nvme}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@given(
    st.binary(max_size=5000),
    st.lists(st.integers(1, 5000), max_size=6),
    st.sampled_from(sorted(CRCS)),
)
def test_combined_range_crcs_equal_the_whole_objects_crc(
    data: bytes, cuts: list[int], algorithm: str
) -> None:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    ranges = [(s, e, crc_update(algorithm, data[s:e])) for s, e in itertools.pairwise(points)]
    if not ranges:
        ranges = [(0, 0, 0)]
    assert crc_of_ranges(algorithm, reversed(ranges)) == CRCS[algorithm](data)


def test_crc_of_ranges_refuses_a_gap() -> None:
    with pytest.raises(ValueError, match="gap at byte 10"):
        crc_of_ranges("CRC32", [(0, 10, 0), (11, 20, 0)])


def test_crcs_are_preferred_over_hashes() -> None:
    checksums = {"SHA256": b64(b"x" * 32), "CRC32": b64(b"abcd"), "CRC64NVME": b64(b"12345678")}
    assert choose(checksums, "FULL_OBJECT", "0" * 32).level is Verification.CRC64NVME


def test_a_composite_checksum_is_passed_over() -> None:
    assert choose({"CRC32": b64(b"abcd") + "-3"}, None, "x-3").algorithm is None
    assert choose({"CRC32": b64(b"abcd")}, "COMPOSITE", "x-3").algorithm is None


def test_an_etag_is_an_md5_unless_encrypted_with_a_key() -> None:
    etag = hashlib.md5(b"data").hexdigest()
    assert choose({}, None, etag).expected == hashlib.md5(b"data").digest()
    assert choose({}, None, etag, encrypted_with_key=True).algorithm is None
    # A multipart ETag is the MD5 of the parts' MD5s: checked once the layout is known.
    multipart = choose({}, None, etag + "-2")
    assert (multipart.algorithm, multipart.parts) == ("MD5-MULTIPART", 2)
    assert multipart.expected == hashlib.md5(b"data").digest()
    assert choose({}, None, etag + "-2", encrypted_with_key=True).algorithm is None


def test_a_malformed_checksum_is_ignored() -> None:
    assert choose({"CRC32": "not base64!"}, None, "").algorithm is None


@given(st.lists(st.binary(max_size=300), max_size=5))
def test_digest_is_incremental(chunks: list[bytes]) -> None:
    whole = b"".join(chunks)
    for algorithm, expected in [
        ("CRC32", crc_bytes("CRC32", zlib.crc32(whole))),
        ("CRC64NVME", crc_bytes("CRC64NVME", crt.crc64nvme(whole))),
        ("SHA256", hashlib.sha256(whole).digest()),
        ("MD5", hashlib.md5(whole).digest()),
    ]:
        digest = Digest(algorithm)
        for chunk in chunks:
            digest.update(chunk)
        assert digest.value() == expected
    assert Digest(None).value() == b""


def test_mismatch_message_shows_both_values() -> None:
    expectation = choose({"CRC32": b64(b"abcd")}, None, "")
    message = expectation.describe(b"wxyz")
    assert "crc32 mismatch" in message
    assert b64(b"abcd") in message
    assert b64(b"wxyz") in message


# -- loading awscrt ahead (it costs 50-70 ms to load) ---------------------------------


def _obj(size: int, *algorithms: str) -> RemoteObject:
    return RemoteObject("k", size, "e", 0.0, checksum_algorithms=algorithms)


@pytest.mark.parametrize(
    ("obj", "verify", "needed"),
    [
        (_obj(3_000), True, False),  # read whole, MD5 ETag: hashlib only
        (_obj(3_000, "CRC32"), True, False),  # zlib's
        (_obj(3_000, "CRC64NVME"), True, True),
        (_obj(3_000, "CRC32C"), True, True),
        (_obj(3_000, "CRC64NVME"), False, False),  # --no-verify: size only
        (_obj(SMALL_OBJECT + 1), False, True),  # streamed: every range gets a CRC32C
    ],
)
def test_which_objects_need_awscrt(obj: RemoteObject, verify: bool, needed: bool) -> None:
    assert computes_crt_crc(obj, verify) is needed


def in_a_fresh_interpreter(code: str) -> None:
    """Run *code* where awscrt is not loaded yet (this process has it); it asserts."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_awscrt_is_loaded_in_a_thread_once_asked_for() -> None:
    """In a fresh interpreter: the loader thread starts once, and loads it."""
    code = (
        "import sys, threading\n"
        "from icanhazmodel import _checksums as c\n"
        "assert 'awscrt.checksums' not in sys.modules\n"
        "c.load_crt_soon(); c.load_crt_soon()\n"
        "loaders = [t for t in threading.enumerate() if t.name == 'icanhazmodel-awscrt']\n"
        "assert len(loaders) == 1, loaders\n"
        "loaders[0].join(30)\n"
        "assert 'awscrt.checksums' in sys.modules\n"
    )
    in_a_fresh_interpreter(code)


# -- CRCs in plain Python, for a run that checks only a few bytes ----------------------


def test_python_crcs_give_the_catalogue_check_values() -> None:
    # CRC-64/NVME and CRC-32C (iSCSI) of "123456789", as the CRC catalogue has them.
    assert _crcpy.crc_update("CRC64NVME", b"123456789") == 0xAE8B14860A799888
    assert _crcpy.crc_update("CRC32C", b"123456789") == 0xE3069283


@given(st.binary(max_size=3000), st.integers(0, 3000), st.sampled_from(["CRC32C", "CRC64NVME"]))
def test_python_crcs_equal_awscrts_however_the_bytes_are_cut(
    data: bytes, cut: int, algorithm: str
) -> None:
    cut %= len(data) + 1
    first = _crcpy.crc_update(algorithm, data[:cut])
    assert _crcpy.crc_update(algorithm, memoryview(data)[cut:], first) == CRCS[algorithm](data)
    # And either may carry on from the other's value.
    whole = CRCS[algorithm]
    assert _crcpy.crc_update(algorithm, data[cut:], whole(data[:cut])) == whole(data)


def test_a_few_bytes_are_checked_without_loading_awscrt() -> None:
    """In a fresh interpreter: CRCs stay in Python until the budget is spent."""
    code = (
        "import sys\n"
        "from icanhazmodel import _checksums as c\n"
        f"budget = {PY_CRC_BUDGET}\n"
        "c.crc_update('CRC64NVME', b'x' * 3000)\n"
        "c.crc_update('CRC32C', b'x' * (budget - 3000))\n"
        "assert 'awscrt.checksums' not in sys.modules\n"
        "assert not c.crc_in_python(1)\n"
        "c.crc_update('CRC64NVME', b'x')\n"
        "assert 'awscrt.checksums' in sys.modules\n"
    )
    in_a_fresh_interpreter(code)


def test_once_awscrt_is_being_loaded_it_computes_every_crc() -> None:
    code = (
        "import sys\n"
        "from icanhazmodel import _checksums as c\n"
        "c.load_crt_soon()\n"
        "assert not c.crc_in_python(1)\n"
        "c.crc_update('CRC32C', b'x')\n"
        "assert 'awscrt.checksums' in sys.modules\n"
    )
    in_a_fresh_interpreter(code)
