"""Shared fixtures: moto's S3 server over real HTTP, tiny models, trainer runs.

Helpers (tiny models, datasets, S3 helpers) live in trainer_testkit.py, importable from the
test modules because this folder is put on sys.path here (pytest runs with
--import-mode=importlib, which does not do that itself).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from trainer_testkit import (BUCKET, CHAT_TEMPLATE, build_tiny_model, build_tokenizer, free_port,  # noqa: E402
                             upload_dir, write_config)

@pytest.fixture(scope="session")
def s3() -> Any:
    """moto's S3 server on a free port; the AWS_* env points boto3 (and subprocesses) at it."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    try:
        yield client
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v




@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model("llama", tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model("bert", tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_llama_s3(s3: Any, tiny_llama: Path) -> str:
    return upload_dir(s3, tiny_llama, "models/tiny-llama")


@pytest.fixture(scope="session")
def tiny_bert_s3(s3: Any, tiny_bert: Path) -> str:
    return upload_dir(s3, tiny_bert, "models/tiny-bert")


@pytest.fixture
def trainer_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment of one trainer run: metrics off, a private model cache."""
    monkeypatch.setenv("TUNELOOP_METRICS_PORT", "0")
    monkeypatch.setenv("TUNELOOP_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "NNODES", "NPROC_PER_NODE"):
        monkeypatch.delenv(name, raising=False)
    return dict(os.environ)



@pytest.fixture
def run_trainer(tmp_path: Path, trainer_env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess]:
    """Run `tuneloop-train` in a subprocess (as the pod does); returns the completed process."""

    def run(spec: dict[str, Any], *args: str, env: dict[str, str] | None = None, timeout: float = 240,
            name: str = "config.yaml") -> subprocess.CompletedProcess:
        config = write_config(tmp_path / name, spec)
        return subprocess.run([sys.executable, "-m", "tuneloop.trainer.cli", "--config", str(config), *args],
                              env={**trainer_env, **(env or {})}, capture_output=True, text=True, timeout=timeout)

    return run




@pytest.fixture(scope="session")
def tiny_llama_chat_tokenizer() -> Any:
    return build_tokenizer("llama", CHAT_TEMPLATE)


@pytest.fixture
def run_inprocess(tmp_path: Path, trainer_env: dict[str, str], capsys: pytest.CaptureFixture) -> Callable[..., tuple[int, str, str]]:
    """Run `tuneloop-train` in this process (faster than a subprocess): (exit code, stdout, stderr)."""
    from tuneloop.trainer import cli

    def run(spec: dict[str, Any] | None, *args: str, config: Path | None = None) -> tuple[int, str, str]:
        if config is None:
            config = write_config(tmp_path / "config.yaml", spec or {})
        capsys.readouterr()
        code = cli.main(["--config", str(config), *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run
