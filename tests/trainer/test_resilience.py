"""The pod contract under stress: SIGKILL + restart resumes exactly, SIGTERM checkpoints and
exits 75, two gloo processes (torchrun, launched by tuneloop-train itself) train together,
and the metrics endpoint passes `promtool check metrics` while training."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch

from trainer_testkit import BUCKET, build_tiny_model, free_port, upload_dir, list_keys, read_json, sft_rows, spec_for, upload_jsonl, write_config


def long_sft_spec(model: str, train: str, output: str, **training: Any) -> dict[str, Any]:
    spec = spec_for("causal-lm-sft", model, train, output, **{"batchSize": 2, "learningRate": 1e-3, **training})
    spec["dataset"]["split"] = {"validation": 0.1, "test": 0.0}
    return spec


def start(spec: dict[str, Any], tmp_path: Path, env: dict[str, str], name: str) -> subprocess.Popen:
    config = write_config(tmp_path / f"{name}.yaml", spec)
    return subprocess.Popen([sys.executable, "-m", "tuneloop.trainer.cli", "--config", str(config)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate: Any, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"trainer exited early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_sigkill_then_restart_resumes_to_the_same_final_loss(s3: Any, tiny_llama_s3: str, trainer_env: dict[str, str],
                                                             tmp_path: Path) -> None:
    train = upload_jsonl(s3, "data/resume/train.jsonl", sft_rows(200, seed=11))
    # Dropout on, so resuming must restore the RNG too, not just weights and data order.
    model = upload_dir(s3, build_tiny_model("llama", tmp_path / "llama-dropout", dropout=0.2), "models/llama-dropout")
    spec = lambda out: {**long_sft_spec(model, train, out, maxSteps=240, warmupRatio=0.1),  # noqa: E731
                        "output": {"uri": out, "saveEverySteps": 20, "keepLast": 2}}
    straight = spec(f"s3://{BUCKET}/runs/straight")
    interrupted = spec(f"s3://{BUCKET}/runs/killed")

    ref = subprocess.run([sys.executable, "-m", "tuneloop.trainer.cli", "--config", str(write_config(tmp_path / "a.yaml", straight))],
                         env=trainer_env, capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]

    proc = start(interrupted, tmp_path, trainer_env, "b")
    wait_for(lambda: any(k.endswith("manifest.json") for k in list_keys(s3, "runs/killed/checkpoints/")), 240, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not list_keys(s3, "runs/killed/results.json")  # it really died mid-run
    done = [k for k in list_keys(s3, "runs/killed/checkpoints/") if k.endswith("manifest.json")]

    again = subprocess.run([sys.executable, "-m", "tuneloop.trainer.cli", "--config", str(write_config(tmp_path / "b.yaml", interrupted))],
                           env=trainer_env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    resumed_step = max(int(k.split("step-")[1][:8]) for k in done)
    assert f"resumed from s3://{BUCKET}/runs/killed/checkpoints/step-{resumed_step:08d}" in again.stdout
    a, b = read_json(s3, "runs/straight/results.json"), read_json(s3, "runs/killed/results.json")
    assert b["step"] == a["step"] == 240
    assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5, abs=1e-6)
    assert b["validation"]["eval_loss"] == pytest.approx(a["validation"]["eval_loss"], rel=1e-5, abs=1e-6)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def test_metrics_endpoint_during_training_passes_promtool(s3: Any, tiny_llama_s3: str, trainer_env: dict[str, str],
                                                        tmp_path: Path) -> None:
    train = upload_jsonl(s3, "data/metrics/train.jsonl", sft_rows(200, seed=12))
    spec = long_sft_spec(tiny_llama_s3, train, f"s3://{BUCKET}/runs/metrics", maxSteps=100000, evalEverySteps=10)
    spec["output"].update(saveEverySteps=10)
    port = free_port()
    env = {**trainer_env, "TUNELOOP_METRICS_PORT": str(port), "TUNELOOP_JOB_NAME": "sft-demo", "TUNELOOP_NAMESPACE": "ml"}
    proc = start(spec, tmp_path, env, "metrics")
    try:
        def ready() -> bool:
            try:
                text = scrape(port)
            except OSError:
                return False
            return 'kind="latest"' in text and "tuneloop_trainer_eval_loss{" in text
        wait_for(ready, 240, proc)
        text = scrape(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), check.stdout + check.stderr
    samples = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    for name in ("step", "total_steps", "epoch", "progress_ratio", "eta_seconds", "train_loss", "eval_loss", "eval_metric",
                 "learning_rate", "grad_norm", "tokens_per_second", "samples_per_second", "checkpoint_duration_seconds_bucket",
                 "checkpoint_bytes", "checkpoint_info", "data_rows_dropped", "data_rows"):
        assert f"tuneloop_trainer_{name}" in samples, name
    assert 'tuneloop_trainer_eval_metric{job="sft-demo",metric="perplexity",namespace="ml"}' in text
    assert f'tuneloop_trainer_checkpoint_info{{job="sft-demo",kind="latest",namespace="ml",uri="s3://{BUCKET}/runs/metrics/checkpoints/step-' in text
    assert 'tuneloop_trainer_data_rows_dropped{job="sft-demo",namespace="ml",reason="duplicate"}' in text
    step = next(float(line.split()[-1]) for line in text.splitlines() if line.startswith("tuneloop_trainer_step{"))
    assert step >= 10


def test_sigterm_publishes_a_checkpoint_and_exits_retryable(s3: Any, tiny_llama_s3: str, trainer_env: dict[str, str],
                                                          tmp_path: Path) -> None:
    train = upload_jsonl(s3, "data/sigterm/train.jsonl", sft_rows(200, seed=13))
    spec = long_sft_spec(tiny_llama_s3, train, f"s3://{BUCKET}/runs/sigterm", maxSteps=100000)  # no periodic saves
    port = free_port()
    proc = start(spec, tmp_path, {**trainer_env, "TUNELOOP_METRICS_PORT": str(port)}, "sigterm")

    def training() -> bool:
        try:
            return any(line.startswith("tuneloop_trainer_step{") and float(line.split()[-1]) >= 3 for line in scrape(port).splitlines())
        except OSError:
            return False
    wait_for(training, 240, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("tuneloop-train: error: SIGTERM: checkpoint at step ")
    manifests = [k for k in list_keys(s3, "runs/sigterm/checkpoints/") if k.endswith("manifest.json")]
    assert len(manifests) == 1
    manifest = read_json(s3, manifests[0])
    state = read_json(s3, manifests[0].replace("manifest.json", "trainer_state.json"))
    assert state["step"] == manifest["step"] >= 3
    assert not list_keys(s3, "runs/sigterm/final/")


def test_two_gloo_processes_train_together_into_one_checkpoint(s3: Any, tiny_llama_s3: str, trainer_env: dict[str, str],
                                                              tmp_path: Path) -> None:
    train = upload_jsonl(s3, "data/ddp/train.jsonl", sft_rows(200, seed=14))
    spec = long_sft_spec(tiny_llama_s3, train, f"s3://{BUCKET}/runs/ddp", maxSteps=30, evalEverySteps=10, learningRate=3e-3)
    spec["output"].update(saveEverySteps=10)
    # What the operator's pod spec sets; tuneloop-train itself launches torchrun with 2 workers.
    env = {**trainer_env, "NNODES": "1", "NODE_RANK": "0", "NPROC_PER_NODE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "tuneloop.trainer.cli", "--config", str(write_config(tmp_path / "ddp.yaml", spec))],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = sorted({k.split("/")[3] for k in list_keys(s3, "runs/ddp/checkpoints/")})
    assert steps == ["step-00000010", "step-00000020", "step-00000030"]  # 30: the final weights (review item 17)
    for step in steps:
        state = read_json(s3, f"runs/ddp/checkpoints/{step}/trainer_state.json")
        assert state["world_size"] == 2
    local = tmp_path / "rng.pt"
    s3.download_file(BUCKET, "runs/ddp/checkpoints/step-00000020/rng.pt", str(local))
    rng = torch.load(local, weights_only=True)
    assert len(rng) == 2 and not torch.equal(rng[0]["torch"], rng[1]["torch"])  # one file, both ranks' RNG
    results = read_json(s3, "runs/ddp/results.json")
    assert results["step"] == 30
    assert results["validation"]["eval_loss"] < results["history"][0]["eval_loss"]  # still learning at step 30
    assert proc.stdout.count("tuneloop-train: done at step 30/30") == 1  # only rank 0 reports and writes
    report = read_json(s3, "runs/ddp/data_report.json")
    assert report["rows"]["train"] > 0


def test_bad_data_under_torchrun_exits_2_with_the_workers_line_last(tmp_path: Path, tiny_bert: Path, trainer_env: dict[str, str]) -> None:
    from trainer_testkit import write_jsonl

    train = write_jsonl(tmp_path / "train.jsonl", [{"body": "refund", "label": "billing"}] * 4)
    spec = spec_for("sequence-classification", str(tiny_bert), str(train), str(tmp_path / "out"))
    env = {**trainer_env, "NNODES": "1", "NODE_RANK": "0", "NPROC_PER_NODE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "tuneloop.trainer.cli", "--config", str(write_config(tmp_path / "c.yaml", spec))],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"tuneloop-train: error: missing column `text` in {train} (columns: body, label); rename it or map it with dataset.fields")
