"""S3 faults through a fault-injecting proxy in front of moto's server (issue 13).

Pass conditions: transient faults (5xx, dropped connections, slow answers, a timeout) are
retried and the operation finishes; a persistent outage fails as StorageUnavailable (exit 1,
the pod retries), while a missing bucket or key and a malformed URI fail for good (exit 2);
a checkpoint whose upload failed never becomes the newest complete one.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

import pytest

from s3_fault_proxy import FaultProxy
from trainer_testkit import BUCKET, free_port, spec_for, write_config
from tuneloop.trainer.checkpoint import CheckpointPublisher, step_prefix
from tuneloop.trainer.config import PermanentError, RuntimeSettings
from tuneloop.trainer.storage import KeyMissing, StorageRefused, StorageUnavailable, open_storage

ATTEMPTS = 4


@pytest.fixture
def proxy(s3: Any) -> Iterator[FaultProxy]:
    upstream = urlparse(os.environ["AWS_ENDPOINT_URL"])
    with FaultProxy(upstream.hostname, upstream.port) as p:
        yield p


def settings_for(endpoint: str, tmp_path: Path, timeout: int = 2) -> RuntimeSettings:
    env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "AWS_MAX_ATTEMPTS": str(ATTEMPTS),
           "TUNELOOP_S3_TIMEOUT": str(timeout), "TUNELOOP_CACHE_DIR": str(tmp_path / "cache")}
    return RuntimeSettings.from_env(env)


def seed(s3: Any, prefix: str) -> None:
    for i in range(3):
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}/part-{i}.jsonl", Body=b'{"text": "x"}\n')


@pytest.mark.parametrize("fault, times, delay", [
    ("error503", ATTEMPTS - 1, 0.0),
    ("error500", 2, 0.0),
    ("drop", 2, 0.0),
    ("slow", 1, 0.5),
    ("hang", 1, 3.0),
])
def test_transient_faults_are_retried_until_reads_and_writes_finish(s3: Any, proxy: FaultProxy, tmp_path: Path,
                                                                    fault: str, times: int, delay: float) -> None:
    prefix = f"faults/{fault}"
    seed(s3, prefix)
    storage = open_storage(f"s3://{BUCKET}/{prefix}", settings_for(proxy.url, tmp_path))
    for method in ("GET", "PUT"):
        proxy.add(fault, method=method, times=times, delay=delay)
    assert storage.list() == [f"part-{i}.jsonl" for i in range(3)]
    assert storage.read_bytes("part-0.jsonl") == b'{"text": "x"}\n'
    storage.write_bytes("written.json", b"{}")
    assert s3.get_object(Bucket=BUCKET, Key=f"{prefix}/written.json")["Body"].read() == b"{}"
    assert len(proxy.injected) == 2 * times


def test_persistent_outage_fails_retryable_after_the_configured_attempts(s3: Any, proxy: FaultProxy, tmp_path: Path) -> None:
    proxy.add("error503", times=None)
    storage = open_storage(f"s3://{BUCKET}/faults/outage", settings_for(proxy.url, tmp_path))
    with pytest.raises(StorageUnavailable, match="SlowDown .*after retries") as err:
        storage.list()
    assert not isinstance(err.value, PermanentError)
    assert len(proxy.injected) == ATTEMPTS


def test_refused_connection_is_retryable(tmp_path: Path) -> None:
    storage = open_storage(f"s3://{BUCKET}/x", settings_for(f"http://127.0.0.1:{free_port()}", tmp_path))
    with pytest.raises(StorageUnavailable, match="EndpointConnectionError"):
        storage.list()


@pytest.mark.parametrize("uri, key, error", [
    ("s3://no-such-bucket-here/x", None, StorageRefused),
    (f"s3://{BUCKET}/faults/missing", "absent.json", KeyMissing),
    ("s3://Not_A_Valid_Bucket!/x", None, StorageRefused),
])
def test_missing_bucket_key_and_malformed_uri_are_permanent(s3: Any, proxy: FaultProxy, tmp_path: Path,
                                                            uri: str, key: str | None, error: type) -> None:
    storage = open_storage(uri, settings_for(proxy.url, tmp_path))
    with pytest.raises(error) as err:
        storage.read_bytes(key) if key else storage.list()
    assert isinstance(err.value, PermanentError)
    assert not proxy.injected


def test_failed_manifest_upload_never_becomes_latest(s3: Any, proxy: FaultProxy, tmp_path: Path) -> None:
    storage = open_storage(f"s3://{BUCKET}/faults/ckpt", settings_for(proxy.url, tmp_path))
    publisher = CheckpointPublisher(storage, keep_last=3, metric="eval_loss")

    def folder(step: int) -> Path:
        local = tmp_path / f"step-{step}"
        local.mkdir()
        (local / "model.safetensors").write_bytes(b"w" * 100)
        (local / "trainer_state.json").write_text(json.dumps({"step": step}))
        return local

    publisher.publish(folder(1), 1, {"eval_loss": 1.0}, background=False)
    proxy.add("error503", method="PUT", path_contains="manifest.json", times=None)
    with pytest.raises(StorageUnavailable):
        publisher.publish(folder(2), 2, {"eval_loss": 0.5}, background=False)
    assert sorted(publisher.complete_checkpoints()) == [1]
    proxy.clear()
    # Transient faults during the next upload: retried, and it becomes the newest.
    proxy.add("drop", method="PUT", path_contains="model.safetensors", times=2)
    proxy.add("error500", method="PUT", path_contains="manifest.json", times=2)
    publisher.publish(folder(3), 3, {"eval_loss": 0.4}, background=True)
    publisher.wait()
    assert sorted(publisher.complete_checkpoints()) == [1, 3]
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"faults/ckpt/{step_prefix(3)}")["Contents"]}
    assert f"faults/ckpt/{step_prefix(3)}/manifest.json" in keys


def test_trainer_exits_retryable_when_s3_refuses_connections(tmp_path: Path) -> None:
    """The whole command: exit 1 (the pod retries), not 2 (the Job fails for good)."""
    spec = spec_for("sequence-classification", f"s3://{BUCKET}/models/m", f"s3://{BUCKET}/data/train.jsonl",
                    f"s3://{BUCKET}/out/refused", maxSteps=1)
    config = write_config(tmp_path / "config.yaml", spec)
    env = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "2",
           "TUNELOOP_METRICS_PORT": "0", "TUNELOOP_CACHE_DIR": str(tmp_path / "cache"),
           "TUNELOOP_TERMINATION_LOG": str(tmp_path / "termination-log")}
    proc = subprocess.run(["tuneloop-train", "--config", str(config)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "StorageUnavailable" in last and "retryable" in last
