"""Hostile keys in a bucket never write outside the folder they are downloaded into (issue 13).

Whoever can write the model prefix or the output prefix controls the key names a listing or a
checkpoint manifest returns. These tests plant such keys in moto's S3 server (over HTTP) and in
a local output folder, then check the trainer refuses them and nothing lands outside.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from trainer_testkit import BUCKET, upload_dir
from tuneloop.trainer.checkpoint import CheckpointPublisher, step_prefix
from tuneloop.trainer.config import PermanentError, RuntimeSettings
from tuneloop.trainer.model import fetch_model
from tuneloop.trainer.storage import LocalStorage, local_path_inside, open_storage, unsafe_key_reason


def settings(tmp_path: Path) -> RuntimeSettings:
    return RuntimeSettings.from_env({**os.environ, "TUNELOOP_CACHE_DIR": str(tmp_path / "cache")})


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("key, safe", [
    ("config.json", True),
    ("sub/dir/tokenizer.json", True),
    ("../../escape.json", False),
    ("a/../../escape.json", False),
    ("/tmp/escape.json", False),
    ("a//b.json", False),
    ("./a.json", False),
    ("a\\..\\b.json", False),
    ("a\0b", False),
    ("", False),
])
def test_unsafe_key_reason(key: str, safe: bool) -> None:
    assert (unsafe_key_reason(key) is None) is safe


def test_local_path_inside_refuses_a_symlink_out_of_the_folder(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(PermanentError, match="resolves outside"):
        local_path_inside(root, "link/x.json")
    assert local_path_inside(root, "ok.json") == root.resolve() / "ok.json"


@pytest.mark.parametrize("hostile", ["../../escape-{n}.json", "/{tmp}/abs-escape-{n}.json", "sub/../../../escape-{n}.json"])
def test_model_download_refuses_keys_that_leave_the_cache(s3: Any, tiny_llama: Path, tmp_path: Path, hostile: str) -> None:
    n = abs(hash(hostile)) % 10_000
    prefix = f"models/hostile-{n}"
    uri = upload_dir(s3, tiny_llama, prefix)
    key = hostile.format(n=n, tmp=str(tmp_path).strip("/"))
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/{key}", Body=b'{"planted": true}')
    assert any(k.endswith(f"escape-{n}.json") for k in open_storage(uri, settings(tmp_path)).list()), "moto kept the key"
    before = files_under(tmp_path)
    with pytest.raises(PermanentError, match="no plain relative path"):
        fetch_model(uri, settings(tmp_path))
    assert files_under(tmp_path) == before


def test_model_download_skips_code_files(s3: Any, tiny_llama: Path, tmp_path: Path) -> None:
    uri = upload_dir(s3, tiny_llama, "models/with-code")
    s3.put_object(Bucket=BUCKET, Key="models/with-code/usercustomize.py", Body=b"import os; os.system('touch /tmp/pwned')\n")
    s3.put_object(Bucket=BUCKET, Key="models/with-code/modeling_evil.py", Body=b"raise SystemExit\n")
    folder = fetch_model(uri, settings(tmp_path))
    names = files_under(folder)
    assert "config.json" in names
    assert not [n for n in names if n.endswith(".py")]


def plant_checkpoint(s3: Any, output: str, step: int, files: dict[str, bytes], manifest_files: dict[str, int]) -> None:
    prefix = f"{output}/{step_prefix(step)}"
    for name, data in files.items():
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}/{name}", Body=data)
    manifest = {"step": step, "files": manifest_files, "metrics": {}, "created": 0, "format": 1}
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/manifest.json", Body=json.dumps(manifest).encode())


@pytest.mark.parametrize("name", ["../../../escape-ckpt.txt", "/abs-escape-ckpt.txt", "usercustomize.py", "a//b.pt"])
def test_checkpoint_manifest_naming_unknown_files_is_never_resumed(s3: Any, tmp_path: Path, name: str) -> None:
    output = f"out/hostile-{abs(hash(name)) % 10_000}"
    plant_checkpoint(s3, output, 5, {name: b"x" * 3, "model.safetensors": b"y"}, {name: 3, "model.safetensors": 1})
    publisher = CheckpointPublisher(open_storage(f"s3://{BUCKET}/{output}", settings(tmp_path)), keep_last=2, metric="eval_loss")
    assert publisher.complete_checkpoints() == {}
    staging = tmp_path / "staging" / "deep" / "resume-5"
    with pytest.raises(RuntimeError, match="names files other than"):
        publisher.download(5, staging)
    assert files_under(tmp_path) == set()


def test_checkpoint_with_known_files_still_downloads(s3: Any, tmp_path: Path) -> None:
    output = "out/benign"
    plant_checkpoint(s3, output, 7, {"model.safetensors": b"abc", "spec.json": b"{}"}, {"model.safetensors": 3, "spec.json": 2})
    publisher = CheckpointPublisher(open_storage(f"s3://{BUCKET}/{output}", settings(tmp_path)), keep_last=2, metric="eval_loss")
    assert list(publisher.complete_checkpoints()) == [7]
    publisher.download(7, tmp_path / "resume-7")
    assert files_under(tmp_path / "resume-7") == {"model.safetensors", "spec.json"}


def test_local_checkpoint_symlink_is_not_followed_on_resume(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")
    output = tmp_path / "output"
    step_dir = output / step_prefix(3)
    step_dir.mkdir(parents=True)
    (step_dir / "optimizer.pt").symlink_to(secret)
    (step_dir / "spec.json").write_text("{}")
    size = secret.stat().st_size
    (step_dir / "manifest.json").write_text(json.dumps({"step": 3, "files": {"optimizer.pt": size, "spec.json": 2}}))
    publisher = CheckpointPublisher(LocalStorage(output), keep_last=2, metric="eval_loss")
    staging = tmp_path / "staging"
    with pytest.raises(PermanentError, match="symlink"):
        publisher.download(3, staging)
    assert not (staging / "optimizer.pt").exists() or "root:x" not in (staging / "optimizer.pt").read_text()
