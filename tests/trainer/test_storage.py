"""Data URIs: one file, a prefix or a glob, on S3 (moto over HTTP) and on local disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tuneloop.trainer.config import RuntimeSettings
from tuneloop.trainer.storage import LocalStorage, open_storage, resolve_files
from trainer_testkit import BUCKET


@pytest.fixture
def s3_files(s3: Any) -> str:
    for key in ("ds/train/a.jsonl", "ds/train/b.jsonl", "ds/train/_SUCCESS", "ds/train2.jsonl", "ds/eval.csv"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"{}\n")
    return f"s3://{BUCKET}/ds"


@pytest.mark.parametrize(
    ("suffix", "expected"),
    [
        ("/train/a.jsonl", ["a.jsonl"]),
        ("/train", ["train/a.jsonl", "train/b.jsonl"]),  # a prefix is a folder: not train2.jsonl, not _SUCCESS
        ("/train/", ["train/a.jsonl", "train/b.jsonl"]),
        ("/train/*.jsonl", ["a.jsonl", "b.jsonl"]),
        ("/*.csv", ["eval.csv"]),
        ("/missing", []),
    ],
)
def test_resolve_files_on_s3(s3_files: str, suffix: str, expected: list[str]) -> None:
    storage, keys = resolve_files(s3_files + suffix, RuntimeSettings.from_env())
    assert keys == expected
    for key in keys:
        assert storage.read_bytes(key) == b"{}\n"


def test_resolve_files_on_local_disk(tmp_path: Path) -> None:
    for name in ("train/a.jsonl", "train/b.jsonl", "train/.hidden", "train2.jsonl"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}\n")
    settings = RuntimeSettings.from_env({})
    assert resolve_files(str(tmp_path / "train"), settings)[1] == ["train/a.jsonl", "train/b.jsonl"]
    assert resolve_files(str(tmp_path / "train2.jsonl"), settings)[1] == ["train2.jsonl"]
    assert resolve_files(str(tmp_path / "train" / "*.jsonl"), settings)[1] == ["a.jsonl", "b.jsonl"]


def test_local_and_s3_storage_behave_alike(s3: Any, tmp_path: Path) -> None:
    for storage in (LocalStorage(tmp_path / "root"), open_storage(f"s3://{BUCKET}/alike", RuntimeSettings.from_env())):
        storage.write_bytes("checkpoints/step-00000001/manifest.json", b"{}")
        (tmp_path / "f.bin").write_bytes(b"x" * 10)
        storage.upload_file(tmp_path / "f.bin", "checkpoints/step-00000001/f.bin")
        assert storage.list("checkpoints") == ["checkpoints/step-00000001/f.bin", "checkpoints/step-00000001/manifest.json"]
        storage.download_file("checkpoints/step-00000001/f.bin", tmp_path / "back.bin")
        assert (tmp_path / "back.bin").read_bytes() == b"x" * 10
        storage.delete(storage.list("checkpoints"))
        assert storage.list("checkpoints") == []
