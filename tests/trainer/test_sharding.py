"""`training.sharding: fsdp` (FSDP2) at world 2, torchrun with gloo on CPU (issue 8 "Scale").

One torchrun launch (fsdp_worker.py) runs DDP, FSDP, and an FSDP run preempted at step 4 and
resumed; each test below asserts one property of it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from trainer_testkit import free_port, sft_rows, write_jsonl

WORKER = Path(__file__).with_name("fsdp_worker.py")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("fsdp")
    write_jsonl(work / "data" / "train.jsonl", sft_rows(64, seed=7))
    write_jsonl(work / "data" / "validation.jsonl", sft_rows(3, seed=8))  # 3 rows on 2 ranks: uneven eval shares
    out = work / "out.json"
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", TUNELOOP_METRICS_PORT="0", TUNELOOP_CACHE_DIR=str(work / "cache"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(WORKER), str(out), str(tiny_llama), str(work / "data"), str(work)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {**json.loads(out.read_text()), "work": work}


def losses(run: dict[str, Any]) -> list[float]:
    return [run["loss"][str(step)] for step in range(1, 9)]


def test_fsdp_shards_the_parameters_and_matches_the_ddp_loss_trace(runs: dict[str, Any]) -> None:
    assert runs["fsdp"]["sharded"] and runs["fsdp"]["param_types"] == ["DTensor"]
    assert not runs["ddp"]["sharded"] and runs["ddp"]["param_types"] == ["Parameter"]
    ddp, fsdp = losses(runs["ddp"]), losses(runs["fsdp"])
    assert ddp[-1] < ddp[0]  # it trains
    assert fsdp == pytest.approx(ddp, rel=1e-4, abs=1e-5)
    # Evaluation on 3 rows over 2 ranks (one rank runs a throw-away forward) agrees too.
    assert [h["eval_loss"] for h in runs["fsdp"]["history"]] == pytest.approx([h["eval_loss"] for h in runs["ddp"]["history"]],
                                                                              rel=1e-4)


def test_fsdp_checkpoints_are_dcp_shards_written_by_each_rank(runs: dict[str, Any]) -> None:
    checkpoints = runs["work"] / "fsdp" / "checkpoints"
    manifests = {p.parent.name: json.loads(p.read_text()) for p in checkpoints.glob("step-*/manifest.json")}
    assert {"step-00000006", "step-00000008"} <= set(manifests)  # every 3 steps, and the final weights
    files = set(manifests["step-00000006"]["files"])
    assert {".metadata", "__0_0.distcp", "__1_0.distcp", "scheduler.pt", "rng.pt", "trainer_state.json"} <= files
    assert "model.safetensors" not in files and "optimizer.pt" not in files


def test_fsdp_resume_after_preemption_is_exact(runs: dict[str, Any]) -> None:
    preempted, resumed, straight = runs["preempted"], runs["resumed"], runs["fsdp"]
    assert preempted["preempted"] and sorted(map(int, preempted["loss"])) == [1, 2, 3, 4]
    assert sorted(map(int, resumed["loss"])) == [5, 6, 7, 8]  # it went on from the step-4 checkpoint
    assert [preempted["loss"][str(s)] for s in range(1, 5)] == [straight["loss"][str(s)] for s in range(1, 5)]
    assert [resumed["loss"][str(s)] for s in range(5, 9)] == [straight["loss"][str(s)] for s in range(5, 9)]
    assert resumed["validation"] == straight["validation"]
    from safetensors.torch import load_file

    a = load_file(str(runs["work"] / "fsdp" / "final" / "model.safetensors"))
    b = load_file(str(runs["work"] / "resume" / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fsdp_final_model_is_consolidated_and_loads_with_from_pretrained(runs: dict[str, Any], tiny_llama: Path) -> None:
    from transformers import AutoModelForCausalLM

    final = runs["work"] / "fsdp" / "final"
    model = AutoModelForCausalLM.from_pretrained(str(final))
    ddp = AutoModelForCausalLM.from_pretrained(str(runs["work"] / "ddp" / "final"))
    base = AutoModelForCausalLM.from_pretrained(str(tiny_llama))
    trained, reference, start = model.state_dict(), ddp.state_dict(), base.state_dict()
    assert trained.keys() == start.keys()  # every weight, whole: no shard, no FSDP prefix
    assert all(trained[k].shape == start[k].shape for k in start)
    assert any(not torch.equal(trained[k], start[k]) for k in start)
    assert all(torch.allclose(trained[k], reference[k], rtol=1e-3, atol=1e-5) for k in start)
    assert json.loads((final / "tuneloop.json").read_text())["step"] == 8

