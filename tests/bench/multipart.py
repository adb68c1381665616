"""What verifying objects uploaded in parts costs, per kind of check.

moto (not s3rver, which cannot tell a part's size, so objects uploaded in
parts are size-only there) on 127.0.0.1 holds the same objects uploaded in
8 MiB parts five ways: no checksum (the multipart ETag only), COMPOSITE
CRC32, CRC32C and SHA256, and FULL_OBJECT CRC64NVME. Each set is fetched by
icanhazmodel, icanhazmodel --no-verify and s5cmd (which checks none of
them). moto serves slowly and the client shares the CPU with it, so wall
times say little; the client's CPU seconds per GiB (children's rusage, worker
processes included) are the figure to read.

    .venv/bin/python tests/bench/multipart.py [--objects 4] [--size-mib 64] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from moto.server import ThreadedMotoServer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from tests.sample_tree import pattern, s3_client  # noqa: E402

MiB = 1 << 20
BUCKET = "multipart-bench"
KINDS = {  # prefix: (ChecksumAlgorithm, ChecksumType)
    "etag": (None, None),
    "crc32": ("CRC32", None),
    "crc32c": ("CRC32C", None),
    "sha256": ("SHA256", None),
    "crc64nvme": ("CRC64NVME", "FULL_OBJECT"),
}


def upload(
    client: object,
    key: str,
    data: bytes,
    part: int,
    algorithm: str | None,
    checksum_type: str | None,
) -> None:
    extra = {"ChecksumAlgorithm": algorithm} if algorithm else {}
    typed = {"ChecksumType": checksum_type} if checksum_type else {}
    up = client.create_multipart_upload(Bucket=BUCKET, Key=key, **extra, **typed)  # type: ignore[attr-defined]
    parts = []
    for number, start in enumerate(range(0, len(data), part), 1):
        answer = client.upload_part(  # type: ignore[attr-defined]
            Bucket=BUCKET,
            Key=key,
            UploadId=up["UploadId"],
            PartNumber=number,
            Body=data[start : start + part],
            **extra,
        )
        parts.append(
            {"PartNumber": number, "ETag": answer["ETag"]}
            | {k: v for k, v in answer.items() if k.startswith("Checksum")}
        )
    client.complete_multipart_upload(  # type: ignore[attr-defined]
        Bucket=BUCKET, Key=key, UploadId=up["UploadId"], MultipartUpload={"Parts": parts}
    )


def run(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"{argv[0]} failed: {proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=4)
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--part-mib", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--s5cmd", default=str(ROOT / ".venv-bench" / "bin" / "s5cmd"))
    args = parser.parse_args()

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    endpoint = f"http://127.0.0.1:{port}"
    client = s3_client(endpoint, checksums=False)
    client.create_bucket(Bucket=BUCKET)
    size = args.size_mib * MiB
    for prefix, (algorithm, checksum_type) in KINDS.items():
        for i in range(args.objects):
            data = pattern(f"{prefix}{i}", size)
            upload(client, f"{prefix}/{i}.bin", data, args.part_mib * MiB, algorithm, checksum_type)
    gib = args.objects * size / (1 << 30)
    env = {
        "PATH": "/usr/bin:/bin",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "HOME": "/tmp",
    }
    ours = str(Path(sys.executable).parent / "icanhazmodel")
    tools = {
        "icanhazmodel": [ours, "-q", "--no-progress", "--json"],
        "icanhazmodel --no-verify": [ours, "-q", "--no-progress", "--json", "--no-verify"],
        "s5cmd": [args.s5cmd],
    }
    print(
        f"{args.objects} x {args.size_mib} MiB per kind, uploaded in {args.part_mib} MiB parts; "
        f"median of {args.runs} runs; CPU = client CPU s per GiB"
    )
    print("| uploaded with | tool | wall s | client CPU s/GiB | verified |")
    print("|---|---|---|---|---|")
    for prefix in KINDS:
        for name, base in tools.items():
            walls, cpus, levels = [], [], ""
            for _ in range(args.runs):
                dest = Path(tempfile.mkdtemp(prefix="mpbench-"))
                if name == "s5cmd":
                    argv = [
                        *base,
                        "--endpoint-url",
                        endpoint,
                        "cp",
                        f"s3://{BUCKET}/{prefix}/*",
                        f"{dest}/{prefix}/",
                    ]
                else:
                    argv = [
                        *base,
                        "-b",
                        BUCKET,
                        "-k",
                        prefix,
                        "-m",
                        str(dest),
                        "--endpoint-url",
                        endpoint,
                    ]
                wall, cpu, out = run(argv, env)
                if name != "s5cmd":
                    levels = ", ".join(
                        f"{n} {k}" for k, n in json.loads(out)["verification"].items()
                    )
                got = sorted(p.stat().st_size for p in (dest / prefix).iterdir())
                if got != [size] * args.objects:
                    sys.exit(f"{name} left {got} under {dest}")
                shutil.rmtree(dest)
                walls.append(wall)
                cpus.append(cpu / gib)
            print(
                f"| {prefix} | {name} | {statistics.median(walls):.2f} | "
                f"{statistics.median(cpus):.2f} | {levels or '(none)'} |"
            )
    server.stop()


if __name__ == "__main__":
    main()
