"""The pod contract, checked from both sides: what the builders render is exactly what the
trainer reads (its config file and its environment)."""

from __future__ import annotations

from pathlib import Path

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.operator.builders import Owner, build_config_map, build_trainer_job
from tuneloop.trainer.config import RuntimeSettings, load_config

OWNER = Owner(name="dist", namespace="ml", uid="u")
SPEC = FineTuneJobSpec.from_dict({
    "task": "sequence-classification",
    "model": {"source": "s3://models/minilm/"},
    "dataset": {"train": "s3://data/train.csv"},
    "output": {"uri": "s3://out/dist/"},
    "training": {"packing": False, "epochs": 2},
    "resources": {"nodes": 3, "gpusPerNode": 2},
    "storage": {"endpoint": "http://minio:9000", "region": "eu-west-1", "credentialsSecret": {"name": "s3"}},
})


def test_trainer_loads_the_rendered_config(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TUNELOOP_NAMESPACE", "ml")
    config_map = build_config_map(OWNER, SPEC)
    path = tmp_path / "config.yaml"
    path.write_text(config_map["data"]["config.yaml"])
    assert load_config(path) == SPEC


def test_trainer_reads_the_rendered_environment() -> None:
    job = build_trainer_job(OWNER, SPEC)
    container = job["spec"]["template"]["spec"]["containers"][0]
    # What the kubelet would resolve: this pod is index 2; the Secret holds two keys.
    resolved = {"NODE_RANK": "2", "AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "key"}
    environ = {e["name"]: e["value"] if "value" in e else resolved[e["name"]] for e in container["env"]}
    settings = RuntimeSettings.from_env(environ)
    assert (settings.job_name, settings.namespace, settings.metrics_port) == ("dist", "ml", 9400)
    assert (settings.nnodes, settings.node_rank, settings.nproc_per_node) == (3, 2, 2)
    assert (settings.master_addr, settings.master_port) == ("dist-trainer-0.dist-trainer", 29500)
    assert settings.s3_endpoint_url == "http://minio:9000" and settings.aws_region == "eu-west-1"
    assert settings.cache_dir == "/var/cache/tuneloop"
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {settings.cache_dir, "/tmp", "/dev/shm"}
    assert container["command"] == ["tuneloop-train", "--config", "/etc/tuneloop/config.yaml"]
    assert {"name": "metrics", "containerPort": settings.metrics_port} in container["ports"]
    # The final report and error line land where Kubernetes reads the termination message.
    assert settings.termination_log == container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
