"""`make demo`: the real CLI against a local S3 server holding sample artifacts.

Starts moto's S3 server on 127.0.0.1, fills a bucket with the sample model
tree (and decoys that must not be pulled), writes a throwaway AWS profile
named like the one in the README, runs

    icanhazmodel --profile kevin-digitalreasoning --model_key conduct/secrecy/en/version_1.2

against it, prints the tree it wrote, and stops the server. No AWS account.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from moto.server import ThreadedMotoServer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.sample_tree import BUCKET, MODEL_KEY, everything, fill_bucket, s3_client

PROFILE = "kevin-digitalreasoning"


def print_tree(root: Path) -> None:
    print(f"{root}/")

    def walk(directory: Path, indent: str) -> None:
        entries = sorted(directory.iterdir())
        for i, entry in enumerate(entries):
            last = i == len(entries) - 1
            branch = "└── " if last else "├── "
            if entry.is_dir():
                print(f"{indent}{branch}{entry.name}/")
                walk(entry, indent + ("    " if last else "│   "))
            else:
                print(f"{indent}{branch}{entry.name}  ({entry.stat().st_size:,} bytes)")

    walk(root, "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default="ptms", help="where to write (default: ./ptms)")
    parser.add_argument(
        "--scale",
        type=float,
        default=1 / 16,
        help="size of the sample files relative to the benchmark's 415 MiB",
    )
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no per-request log lines

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = s3_client(endpoint)
        client.create_bucket(Bucket=BUCKET)
        fill_bucket(client, BUCKET, everything(args.scale))
        print(f"local S3 server at {endpoint}, bucket '{BUCKET}' filled with sample artifacts\n")

        with tempfile.TemporaryDirectory() as aws_dir:
            credentials = Path(aws_dir) / "credentials"
            credentials.write_text(
                f"[{PROFILE}]\naws_access_key_id = demo\naws_secret_access_key = demo\n"
            )
            env = {
                **os.environ,
                "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
                "AWS_CONFIG_FILE": str(Path(aws_dir) / "config"),
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true",
                "ICANHAZMODEL_BUCKET": BUCKET,
                "AWS_ENDPOINT_URL": endpoint,
            }
            command = [
                str(Path(sys.executable).with_name("icanhazmodel")),
                "--profile",
                PROFILE,
                "--model_key",
                MODEL_KEY,
                "--model_dir",
                args.model_dir,
            ]
            print("$ ICANHAZMODEL_BUCKET=" + BUCKET + " AWS_ENDPOINT_URL=" + endpoint + " \\")
            print(
                "  icanhazmodel --profile "
                + PROFILE
                + " --model_key "
                + MODEL_KEY
                + " --model_dir "
                + args.model_dir
            )
            code = subprocess.run(command, env=env, stdin=subprocess.DEVNULL).returncode
        print()
        print_tree(Path(args.model_dir))
        return code
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
