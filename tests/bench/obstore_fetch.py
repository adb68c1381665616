"""The idiomatic obstore download, as a peer for `make bench`.

    python obstore_fetch.py ENDPOINT BUCKET PREFIX DEST

List the prefix, then ``get_async`` each object behind a semaphore and
stream it into a file at the key's path: about what a user writes with
obstore (Rust ``object_store`` bindings) in a few lines. It checks nothing
it downloads. Credentials come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import obstore
from obstore.store import S3Store

IN_FLIGHT = 16


async def main(endpoint: str, bucket: str, prefix: str, dest: Path) -> None:
    store = S3Store(
        bucket,
        endpoint=endpoint,
        access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(key: str) -> None:
        async with gate:
            target = dest / key
            target.parent.mkdir(parents=True, exist_ok=True)
            result = await obstore.get_async(store, key)
            # Plain blocking writes, as such a script is usually written.
            with open(target, "wb") as file:  # noqa: ASYNC230
                async for chunk in result.stream(min_chunk_size=8 << 20):
                    file.write(chunk)

    keys = [meta["path"] for batch in obstore.list(store, prefix=prefix + "/") for meta in batch]
    await asyncio.gather(*(one(key) for key in keys))


if __name__ == "__main__":
    endpoint, bucket, prefix, dest = sys.argv[1:5]
    asyncio.run(main(endpoint, bucket, prefix, Path(dest)))
