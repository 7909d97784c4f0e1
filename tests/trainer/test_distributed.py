"""Data-parallel correctness at world 2 (torchrun, gloo on CPU) against single-process references.

One torchrun launch (dist_worker.py) measures; each test below asserts one property of it.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from trainer_testkit import COLORS, FRUITS, NOISE, free_port, write_jsonl

WORKER = Path(__file__).with_name("dist_worker.py")


def uneven_sft_rows(n: int, seed: int) -> list[dict[str, str]]:
    """Responses of 1 to 24 words, so ranks hold very different target counts."""
    rng = random.Random(seed)
    return [{"prompt": f"what fruit {rng.choice(COLORS)} {i}", "response": " ".join(rng.choices(FRUITS + NOISE, k=rng.randint(1, 24)))}
            for i in range(n)]


@pytest.fixture(scope="module")
def world2(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("world2")
    write_jsonl(work / "data" / "train.jsonl", uneven_sft_rows(48, seed=5))
    write_jsonl(work / "data" / "validation.jsonl", uneven_sft_rows(1, seed=6))  # fewer rows than processes
    out = work / "out.json"
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", TUNELOOP_METRICS_PORT="0", TUNELOOP_CACHE_DIR=str(work / "cache"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(WORKER), str(out), str(tiny_llama), str(work / "data")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


def test_world2_gradient_equals_the_single_process_gradient(world2: dict[str, Any]) -> None:
    found = world2["gradient"]
    a, b = found["targets_per_rank"]
    assert a != b  # otherwise per-rank normalisation would be right by accident
    assert found["relative_error"] < 1e-5


def test_world2_learning_rate_trace_equals_world1(world2: dict[str, Any]) -> None:
    import torch
    from transformers import get_scheduler

    found = world2["schedule"]
    assert found["world"] == 2 and found["total_steps"] == 16
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    reference = get_scheduler("linear", optimizer, num_warmup_steps=4, num_training_steps=16)
    expected = []
    for _ in range(16):
        optimizer.step()
        reference.step()
        expected.append(reference.get_last_lr()[0])
    assert found["lr"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert max(found["lr"]) == pytest.approx(1e-3) and found["lr"].index(max(found["lr"])) == 3  # peak after warmup


def test_world2_evaluates_a_split_smaller_than_the_world(world2: dict[str, Any]) -> None:
    found = world2["schedule"]
    assert found["validation_rows"] == 1
    assert [h["step"] for h in found["history"]] == [4, 8, 12, 16]  # 16: the final evaluation in finish()


def test_world2_collectives_wait_for_rank0_io(world2: dict[str, Any]) -> None:
    """Review item 16: other ranks wait in a barrier while rank 0 exports and uploads final/;
    the process group's timeout is the trainer's setting (1 h), not torch's default (gloo 30 min, NCCL 10)."""
    from tuneloop.trainer.config import RuntimeSettings

    assert world2["schedule"]["collective_timeout"] == RuntimeSettings().collective_timeout == 3600


def test_evaluate_only_on_fewer_rows_than_processes(tiny_llama: Path, tmp_path: Path, trainer_env: dict[str, str]) -> None:
    """The MaintenancePolicy's evaluation runs on small fresh data; one row at world 2 used to hang."""
    from trainer_testkit import spec_for, write_config

    fresh = write_jsonl(tmp_path / "fresh.jsonl", uneven_sft_rows(1, seed=7))
    spec = spec_for("causal-lm-sft", str(tiny_llama), str(fresh), str(tmp_path / "out"))
    env = {**trainer_env, "NNODES": "1", "NODE_RANK": "0", "NPROC_PER_NODE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1"}
    results = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "-m", "tuneloop.trainer.cli", "--config", str(write_config(tmp_path / "c.yaml", spec)),
                           "--evaluate-only", "--data", str(fresh), "--results", str(results)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(results.read_text())
    assert found["rows"] == 1 and found["metrics"]["eval_loss"] > 0


def test_a_torchrun_worker_exits_with_its_code_and_every_line_but_no_finalization(trainer_env: dict[str, str]) -> None:
    """`exit_worker` skips Python's finalization (where gloo's thread could abort the process,
    see its docstring) but keeps the exit code and what was printed to the pipes."""
    script = ("import atexit, sys; from tuneloop.trainer.cli import exit_worker; "
              "atexit.register(print, 'finalized'); print('result line'); print('a warning', file=sys.stderr); exit_worker(3)")
    buffered = {k: v for k, v in trainer_env.items() if k != "PYTHONUNBUFFERED"}  # so a missing flush would lose the line
    proc = subprocess.run([sys.executable, "-c", script], env=buffered, capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "result line\n", "a warning\n")


def test_the_worker_entry_point_keeps_the_exit_code_and_the_error_line(tmp_path: Path, trainer_env: dict[str, str]) -> None:
    """`python -m tuneloop.trainer.cli`, as torchrun starts each worker, leaves through `exit_worker`."""
    for env in (trainer_env, {**trainer_env, "TORCHELASTIC_RUN_ID": "test"}):
        proc = subprocess.run([sys.executable, "-m", "tuneloop.trainer.cli", "--config", str(tmp_path / "missing.yaml")],
                              env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2
        assert proc.stderr.startswith("tuneloop-train: error: cannot read config"), proc.stderr
