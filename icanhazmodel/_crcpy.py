"""CRC-64/NVME and CRC-32C in plain Python, for the few bytes a small run checks.

awscrt computes both in hardware, but loading it costs 50-70 ms (see
``_checksums._crt``), most of a run that fetches one 3 KB config from S3,
which sends CRC64NVME for anything a current SDK uploaded. Here a byte costs
~100 ns: that config is checked in 0.3 ms. ``_checksums`` decides which is
used; both give the same values, and chain the same way: each call takes
the CRC so far (0 to start) and returns it with *data* added.
"""

from __future__ import annotations

import functools

# Reflected polynomials (both CRCs are reflected in and out, start from all
# ones and end inverted): CRC-64/NVME's 0xAD93D23594C93659, CRC-32C's
# (Castagnoli) 0x1EDC6F41.
_POLYNOMIALS = {"CRC64NVME": (0x9A6C9329AC4BC9B5, 64), "CRC32C": (0x82F63B78, 32)}


@functools.cache
def _table(algorithm: str) -> tuple[tuple[int, ...], int]:
    polynomial, width = _POLYNOMIALS[algorithm]
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ polynomial if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table), (1 << width) - 1


def crc_update(algorithm: str, data: bytes | memoryview, previous: int = 0) -> int:
    """*previous* (the CRC of what came before) with *data* added."""
    table, mask = _table(algorithm)
    crc = previous ^ mask
    for byte in data if isinstance(data, bytes) else bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ mask
