"""Storage behind one small interface: `s3://bucket/prefix` (boto3) or a local directory.

The recipe only ever sees `Storage` objects rooted at a URI, so it runs the same in a pod
(S3 or MinIO), in a test (moto's server over real HTTP) and on a laptop (a folder).
Keys are always '/'-separated and relative to the root.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Protocol, TypeVar

from tuneloop.trainer.config import PermanentError, RuntimeSettings

GLOB_CHARS = "*?["
T = TypeVar("T")

# S3 answers that retrying cannot change: the bucket or key is missing, access is denied, the
# request is malformed. Anything else (connection refused, timeouts, 5xx, SlowDown) is
# retried by botocore with backoff and then surfaces as StorageUnavailable: exit 1, and the
# pod retries (issue 13: a refused connection used to fail the Job for good).
PERMANENT_S3_CODES = frozenset({
    "NoSuchBucket", "NoSuchKey", "NotFound", "404", "AccessDenied", "403", "Forbidden", "AllAccessDisabled",
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidBucketName", "InvalidArgument", "InvalidRequest",
    "InvalidObjectState", "AuthorizationHeaderMalformed",
})


class StorageRefused(PermanentError):
    """S3 said no for good (missing bucket or key, access denied, malformed request)."""


class KeyMissing(StorageRefused):
    pass


class StorageUnavailable(RuntimeError):
    """S3 could not be reached or kept failing after every retry: retrying the pod may help."""


def storage_error(err: BaseException, what: str) -> Exception:
    """The exception to raise for `err`, met while doing `what` (e.g. "list s3://b/p")."""
    from botocore.exceptions import ClientError, NoCredentialsError, ParamValidationError

    if isinstance(err, ClientError):
        code = str(err.response.get("Error", {}).get("Code", ""))
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = err.response.get("Error", {}).get("Message") or code
        if code in ("NoSuchKey", "NotFound", "404"):
            return KeyMissing(f"cannot {what}: {code} ({message})")
        if code in PERMANENT_S3_CODES or status in (400, 403, 404):
            return StorageRefused(f"cannot {what}: {code} ({message}); check the URI, the bucket and the credentials")
        return StorageUnavailable(f"cannot {what}: {code} (HTTP {status}) after retries; a retry of the pod resumes")
    if isinstance(err, (ParamValidationError, NoCredentialsError)):
        return StorageRefused(f"cannot {what}: {str(err).splitlines()[0]}")
    if isinstance(err, ValueError):  # botocore's endpoint/URL validation
        return StorageRefused(f"cannot {what}: {err}")
    return StorageUnavailable(f"cannot {what}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} "
                              "after retries; a retry of the pod resumes")


def unsafe_key_reason(key: str) -> str | None:
    """Why `key` is no plain relative path ('a/b.json'), or None when it is one.

    Keys come from bucket listings and manifests that whoever can write the bucket controls:
    `../x` or `/abs` joined onto a local folder would write outside it (issue 13).
    """
    if not key:
        return "it is empty"
    if key.startswith("/"):
        return "it is absolute"
    if "\\" in key or "\0" in key:
        return "it holds a backslash or NUL"
    if any(part in ("", ".", "..") for part in key.split("/")):
        return "it has an empty, '.' or '..' segment"
    return None


def local_path_inside(root: Path, key: str) -> Path:
    """`root / key`, refused (PermanentError) unless it provably stays inside `root`.

    The lexical check catches `..` and absolute keys; resolving catches a symlink already
    inside `root` that points out of it.
    """
    reason = unsafe_key_reason(key)
    if reason is not None:
        raise PermanentError(f"refusing storage key {key!r}: {reason}; keys must be plain relative paths")
    base = root.resolve()
    target = (base / key).resolve()
    if not target.is_relative_to(base):
        raise PermanentError(f"refusing storage key {key!r}: it resolves outside {root} (through a symlink)")
    return base / key


class Storage(Protocol):
    uri: str

    def list(self, prefix: str = "") -> list[str]:
        """Keys (files) under `prefix`, sorted."""

    def read_bytes(self, key: str) -> bytes: ...

    def write_bytes(self, key: str, data: bytes) -> None: ...

    def upload_file(self, local: Path, key: str) -> None: ...

    def download_file(self, key: str, local: Path) -> None: ...

    def delete(self, keys: list[str]) -> None: ...

    def child(self, key: str) -> str:
        """The URI of `key` (for logs, metrics and status)."""


class LocalStorage:
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / key if key else self.root

    def list(self, prefix: str = "") -> list[str]:
        base = self._path(prefix)
        if base.is_file():
            return [prefix]
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root).as_posix()) for p in base.rglob("*") if p.is_file())

    def read_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # readers never see a half-written file

    def upload_file(self, local: Path, key: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        shutil.copyfile(local, tmp)
        os.replace(tmp, path)

    def download_file(self, key: str, local: Path) -> None:
        """Copy `key` to `local`; a symlink is refused, never followed (a checkpoint folder
        holding `optimizer.pt -> /etc/passwd` must not copy that file in)."""
        source = local_path_inside(self.root, key)
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            if os.path.islink(source):
                raise PermanentError(f"refusing {source}: it is a symlink") from None
            raise
        out = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "rb") as src, os.fdopen(out, "wb") as dst:
            shutil.copyfileobj(src, dst)

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self._path(key).unlink(missing_ok=True)
        # Leave no empty step-NNNNNNNN/ folders behind.
        for key in keys:
            parent = self._path(key).parent
            while parent != self.root and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent

    def child(self, key: str) -> str:
        return str(self._path(key))


class S3Storage:
    def __init__(self, uri: str, settings: RuntimeSettings):
        import boto3  # imported here so local-only runs and --help need no boto3 import time
        from botocore.config import Config

        bucket, _, prefix = uri[len("s3://"):].partition("/")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.aws_region,
            aws_access_key_id=settings.aws_access_key_id,
            aws_secret_access_key=settings.aws_secret_access_key,
            aws_session_token=settings.aws_session_token,
            # "standard" retries connection errors, timeouts, 5xx and throttling with jittered
            # exponential backoff; what is still failing after that is classified by storage_error.
            config=Config(retries={"total_max_attempts": max(1, settings.s3_max_attempts), "mode": "standard"},
                          connect_timeout=settings.s3_timeout, read_timeout=settings.s3_timeout),
        )

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - botocore raises many types; storage_error sorts them
            raise storage_error(err, what) from err

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}".strip("/") if self.prefix else key

    def list(self, prefix: str = "") -> list[str]:
        return self._call(f"list {self.child(prefix)}", self._list, prefix)

    def _list(self, prefix: str) -> list[str]:
        full = self._key(prefix)
        keys = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            for obj in page.get("Contents", []):
                k = obj["Key"]
                # `data/train` must not match `data/train2.jsonl` unless asked for a raw prefix.
                if k == full or not full or k.startswith(full.rstrip("/") + "/"):
                    keys.append(k[len(self.prefix) + 1:] if self.prefix else k)
        return sorted(keys)

    def read_bytes(self, key: str) -> bytes:
        return self._call(f"read {self.child(key)}",
                          lambda: self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read())

    def write_bytes(self, key: str, data: bytes) -> None:
        self._call(f"write {self.child(key)}", self.client.put_object, Bucket=self.bucket, Key=self._key(key), Body=data)

    def upload_file(self, local: Path, key: str) -> None:
        # multipart for big files
        self._call(f"upload {self.child(key)}", self.client.upload_file, str(local), self.bucket, self._key(key))

    def download_file(self, key: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        self._call(f"download {self.child(key)}", self.client.download_file, self.bucket, self._key(key), str(local))

    def delete(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):
            chunk = [{"Key": self._key(k)} for k in keys[i:i + 1000]]
            if chunk:
                self._call(f"delete under {self.uri}", self.client.delete_objects, Bucket=self.bucket,
                           Delete={"Objects": chunk, "Quiet": True})

    def child(self, key: str) -> str:
        return f"{self.uri}/{key}" if key else self.uri


def glob_match(key: str, pattern: str) -> bool:
    """Shell-style matching per path segment: `*` and `?` never match '/' (issue 13:
    `data/*.jsonl` used to pick up `data/deep/er/c.jsonl` too)."""
    parts, wanted = key.split("/"), pattern.split("/")
    return len(parts) == len(wanted) and all(fnmatch.fnmatchcase(p, w) for p, w in zip(parts, wanted))


def open_storage(uri: str, settings: RuntimeSettings) -> Storage:
    """A Storage rooted at `uri` (s3://bucket/prefix or a local directory)."""
    if uri.startswith("s3://"):
        return S3Storage(uri, settings)
    return LocalStorage(uri)


def resolve_files(uri: str, settings: RuntimeSettings) -> tuple[Storage, list[str]]:
    """The files a data URI names: one file, every file under a prefix, or a glob.

    `s3://b/data/train.jsonl`, `s3://b/data/train/`, `data/*.csv`, `s3://b/d/part-*.parquet`.
    Returns a Storage rooted at the parent "folder" and the matching keys relative to it.
    """
    uri = uri.rstrip("/")
    cut = min((uri.find(c) for c in GLOB_CHARS if c in uri), default=len(uri))
    slash = uri.rfind("/", 0, cut)
    bucket_end = len("s3://") + uri[5:].find("/") if uri.startswith("s3://") and "/" in uri[5:] else None
    if uri.startswith("s3://") and (bucket_end is None or slash < bucket_end):
        parent, rest = uri if bucket_end is None else uri[:bucket_end], uri[(bucket_end or len(uri)) + 1:]
    elif slash >= 0:
        parent, rest = uri[:slash] or "/", uri[slash + 1:]
    else:
        parent, rest = ".", uri
    globbing = cut < len(uri)
    try:
        storage = open_storage(parent, settings)
        keys = storage.list() if globbing else storage.list(rest)
    except (PermanentError, StorageUnavailable):
        raise  # already says what and whether a retry helps
    except Exception as e:  # noqa: BLE001 - S3 client construction raises many types; the message says what
        raise storage_error(e, f"list data at {uri}") from None
    if globbing:
        keys = [k for k in keys if glob_match(k, rest)]
    keys = [k for k in keys if not Path(k).name.startswith((".", "_"))]  # _SUCCESS, .crc files
    return storage, keys
