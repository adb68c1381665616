"""The sample artifacts used by `make demo`, the tests and the benchmark.

Laid out like a real model bucket (the key from the original tool's README),
with decoys beside it that a correct tool must not pull. Bytes are
deterministic, so any run can check every file by sha256.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config

MODEL_KEY = "conduct/secrecy/en/version_1.2"
BUCKET = "icanhazmodel-demo"

_SPEC_YAML = b"""\
# cognition spec for the conduct/secrecy English classifier
name: cs-secrecy-avg-pool
version: 1.2
language: en
encoder:
  type: fasttext
  embeddings: models/ft/cs-secrecy.ft.bin
  pooling: avg
classifier:
  type: logistic
  weights: models/ft/cs-secrecy-avg-pool.weights.npy
  labels: [secrecy, not_secrecy]
  threshold: 0.42
"""


def pattern(seed: str, size: int) -> bytes:
    """*size* deterministic, incompressible-looking bytes derived from *seed*."""
    out = bytearray()
    block = hashlib.sha256(seed.encode()).digest()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(block + counter.to_bytes(8, "big")).digest() * 128
        counter += 1
    return bytes(out[:size])


@dataclass(frozen=True)
class SampleObject:
    key: str
    size: int
    literal: bytes | None = None

    def data(self) -> bytes:
        return self.literal if self.literal is not None else pattern(self.key, self.size)


def _obj(rel: str, size: int, literal: bytes | None = None) -> SampleObject:
    return SampleObject(
        f"{MODEL_KEY}/{rel}", len(literal) if literal is not None else size, literal
    )


def model_tree(scale: float = 1.0) -> list[SampleObject]:
    """The objects under MODEL_KEY. At scale 1.0: 11 files, about 415 MiB.

    The demo uses a small scale; the benchmark uses 1.0.
    """
    mib = 1 << 20

    def sized(n_mib: float) -> int:
        return max(1, int(n_mib * mib * scale))

    return [
        _obj("models/ft/cs-secrecy-avg-pool.cognition.spec.yaml", 0, _SPEC_YAML),
        _obj("models/ft/cs-secrecy.ft.bin", sized(256)),
        _obj("models/ft/cs-secrecy-avg-pool.weights.npy", sized(96)),
        _obj("models/ft/vocab.txt", sized(2.5)),
        _obj("models/tokenizer/tokenizer.json", sized(1.2)),
        _obj("models/tokenizer/special_tokens_map.json", 0, b'{"unk_token": "<unk>"}\n'),
        _obj("data/train.jsonl", sized(48)),
        _obj("data/dev.jsonl", sized(6)),
        _obj("data/test.jsonl", sized(6)),
        _obj("data/README.md", 0, b"# Data\n\nTrain/dev/test splits, one JSON object per line.\n"),
        _obj("metrics.json", 0, b'{"f1": 0.91, "precision": 0.93, "recall": 0.89}\n'),
    ]


def decoys() -> list[SampleObject]:
    """Keys next to MODEL_KEY that share its text but not its directory."""
    return [
        SampleObject("conduct/secrecy/en/version_1.20/models/ft/cs-secrecy.ft.bin", 1024),
        SampleObject("conduct/secrecy/en/version_1.2.txt", 0, b"not a directory\n"),
        SampleObject("conduct/secrecy/en/version_1.2-rc1/metrics.json", 0, b"{}\n"),
    ]


def markers() -> list[SampleObject]:
    """Zero-byte folder markers, as the S3 console creates them."""
    return [
        SampleObject(f"{MODEL_KEY}/", 0, b""),
        SampleObject(f"{MODEL_KEY}/data/", 0, b""),
        SampleObject(f"{MODEL_KEY}/checkpoints/", 0, b""),
    ]


def everything(scale: float = 1.0) -> Iterator[SampleObject]:
    yield from model_tree(scale)
    yield from decoys()
    yield from markers()


def s3_client(
    endpoint: str, *, checksums: bool = True, key: str = "testing", secret: str = "testing"
) -> Any:
    """A plain boto3 client for filling test buckets (not the code under test).

    By default boto3 adds a CRC32 to every upload, as real SDKs do; without
    *checksums* objects carry none and only their ETag vouches for them.
    """
    config = Config(request_checksum_calculation="when_supported" if checksums else "when_required")
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=config,
    )


def fill_bucket(client: Any, bucket: str, objects: Iterable[SampleObject]) -> None:
    for obj in objects:
        client.put_object(Bucket=bucket, Key=obj.key, Body=obj.data())
