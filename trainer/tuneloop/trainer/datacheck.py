"""`tuneloop-train --config FILE --new-data s3://bucket/prefix/ --since TIME`: how much new data arrived.

The MaintenancePolicy's `newData` trigger runs this as a short Job in the policy's namespace,
with the job template's storage settings, because listing the bucket needs the user's S3
credentials and the operator never reads Secrets. It counts the objects under the prefix
modified after `--since` (the watermark of the data the last retrain saw) and their bytes,
and reports through the termination message, one JSON line:
    {"objects": N, "bytes": B, "newest": "<RFC 3339 of the newest object>", "since": "<--since>"}
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any


def count_new(client: Any, bucket: str, prefix: str, since: datetime | None) -> dict[str, Any]:
    """Objects (and bytes) under `prefix` modified after `since`; `newest` over all of them."""
    objects = size = 0
    newest: datetime | None = None
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            modified = obj["LastModified"]
            newest = modified if newest is None or modified > newest else newest
            if since is None or modified > since:
                objects += 1
                size += int(obj.get("Size") or 0)
    return {"objects": objects, "bytes": size, "newest": _rfc3339(newest) if newest else None}


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_since(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def run(uri: str, since: str | None, settings: Any) -> dict[str, Any]:
    from tuneloop.trainer.storage import S3Storage

    storage = S3Storage(uri, settings)
    prefix = storage.prefix + "/" if storage.prefix else ""
    found = count_new(storage.client, storage.bucket, prefix, parse_since(since))
    return {**found, "since": since}


def report_line(found: dict[str, Any]) -> str:
    return json.dumps(found, separators=(",", ":"))
