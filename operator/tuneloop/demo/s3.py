"""An S3 server on this machine: moto's `ThreadedMotoServer` (real HTTP, boto3-compatible),
with the helpers that seed it. Used by `tuneloop demo` and by the end-to-end tests.

Credentials are moto's test ones: moto accepts any, and the trainer pods get them the way
they would on a cluster, from a Secret (`credentials_secret`).
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any, Iterable, Mapping

from tuneloop.demo.ports import free_port

ACCESS_KEY, SECRET_KEY, REGION = "testing", "testing", "us-east-1"


class S3Server:
    """moto's S3 over HTTP on 127.0.0.1 in a background thread; `client` is boto3's."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self.host, self.port = host, port or free_port()
        self.endpoint = f"http://{self.host}:{self.port}"
        self._server: Any = None
        self.client: Any = None

    def start(self) -> "S3Server":
        import boto3
        from moto.server import ThreadedMotoServer

        # werkzeug logs every request to stderr; a demo's terminal and a test's log want none of it.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        self._server.start()
        self.client = boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                                   aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
        self.client.endpoint = self.endpoint  # tests read it from the client
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> "S3Server":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- seeding ----------------------------------------------------------------------------

    def create_bucket(self, bucket: str) -> None:
        self.client.create_bucket(Bucket=bucket)

    def upload_dir(self, local: Path, uri: str) -> str:
        """Every file under `local` to `s3://bucket/prefix/<relative path>`; returns the URI with a slash."""
        bucket, prefix = split_uri(uri)
        for path in sorted(p for p in Path(local).rglob("*") if p.is_file()):
            self.client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(local).as_posix()}".lstrip("/"))
        return f"s3://{bucket}/{prefix}/"

    def put_bytes(self, uri: str, data: bytes) -> str:
        bucket, key = split_uri(uri)
        self.client.put_object(Bucket=bucket, Key=key, Body=data)
        return uri

    def put_jsonl(self, uri: str, rows: Iterable[Mapping[str, Any]]) -> str:
        return self.put_bytes(uri, "".join(json.dumps(r) + "\n" for r in rows).encode())

    def delete_prefix(self, uri: str) -> None:
        bucket, prefix = split_uri(uri)
        keys = self.list(uri)
        if keys:
            self.client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys]})

    def list(self, uri: str) -> list[str]:
        bucket, prefix = split_uri(uri)
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", ())]

    def read_bytes(self, uri: str) -> bytes | None:
        bucket, key = split_uri(uri)
        try:
            return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None


def split_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/a/b/` -> ("bucket", "a/b")."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    return bucket, prefix.strip("/")


def credentials_secret(name: str, namespace: str) -> dict[str, Any]:
    """The S3 credentials as a Secret: trainer pods get them by secretKeyRef, never the ConfigMap."""
    data = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}
