"""Config and CLI surface: the spec file, env settings, --help, torch-free imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.api.typed import help_text
from tuneloop.trainer.config import PermanentError, RuntimeSettings, load_config, settings_help

REPO = Path(__file__).resolve().parents[2]
SPEC = {"task": "causal-lm-sft", "model": {"source": "s3://models/llama"}, "dataset": {"train": "s3://data/train/"},
        "output": {"uri": "s3://runs/job-1"}, "training": {"maxSteps": 10, "lora": {"r": 8}, "method": "lora"}}


def test_load_config_reads_yaml_json_and_whole_manifests(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(SPEC))
    (tmp_path / "c.json").write_text(__import__("json").dumps(SPEC))
    manifest = {"apiVersion": "tuneloop.dev/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "x"}, "spec": SPEC}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(manifest))
    specs = [load_config(tmp_path / name) for name in ("c.yaml", "c.json", "m.yaml")]
    assert specs[0] == specs[1] == specs[2] == FineTuneJobSpec.from_dict(SPEC)
    assert specs[0].to_dict() == FineTuneJobSpec.from_dict(specs[0].to_dict()).to_dict()


def test_load_config_runs_the_shared_meaning_checks(tmp_path: Path) -> None:
    bad = {**SPEC, "training": {"maxSteps": 10, "epochs": 2}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(PermanentError, match="spec.training.maxSteps: set either epochs or maxSteps, not both"):
        load_config(tmp_path / "c.yaml")


def test_runtime_settings_from_env_with_boto3_fallbacks() -> None:
    settings = RuntimeSettings.from_env({
        "TUNELOOP_JOB_NAME": "j", "TUNELOOP_NAMESPACE": "ns", "TUNELOOP_METRICS_PORT": "0",
        "AWS_ENDPOINT_URL": "http://minio:9000", "AWS_DEFAULT_REGION": "eu-west-1",
        "NNODES": "2", "NPROC_PER_NODE": "4", "NODE_RANK": "1", "MASTER_ADDR": "job-0.job", "MASTER_PORT": "29400",
    })
    assert (settings.job_name, settings.namespace, settings.metrics_port) == ("j", "ns", 0)
    assert (settings.s3_endpoint_url, settings.aws_region) == ("http://minio:9000", "eu-west-1")
    assert settings.launch_world_size == 8 and settings.needs_launcher
    assert not RuntimeSettings.from_env({"NNODES": "2", "WORLD_SIZE": "2"}).needs_launcher  # inside a worker
    assert RuntimeSettings.from_env({"AWS_ENDPOINT_URL_S3": "http://a", "AWS_ENDPOINT_URL": "http://b"}).s3_endpoint_url == "http://a"
    assert RuntimeSettings.from_env({}).metrics_port == 9400
    with pytest.raises(PermanentError, match="NNODES='two' must be an integer"):
        RuntimeSettings.from_env({"NNODES": "two"})


def test_spec_storage_fills_in_what_env_leaves_unset() -> None:
    spec = FineTuneJobSpec.from_dict({**SPEC, "storage": {"endpoint": "http://minio:9000", "region": "r1"}})
    assert RuntimeSettings.from_env({}).with_spec_storage(spec).s3_endpoint_url == "http://minio:9000"
    assert RuntimeSettings.from_env({"AWS_ENDPOINT_URL": "http://env"}).with_spec_storage(spec).s3_endpoint_url == "http://env"


def test_help_lists_every_config_field_and_env_setting_without_importing_torch() -> None:
    code = ("import sys; from tuneloop.trainer import cli; "
            "cli.build_parser().print_help(); assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    for key in help_text(FineTuneJobSpec):
        assert f"  {key} " in proc.stdout, key
    for name in settings_help():
        assert f"  {name} " in proc.stdout, name
    assert "--evaluate-only" in proc.stdout and "75 SIGTERM" in proc.stdout
