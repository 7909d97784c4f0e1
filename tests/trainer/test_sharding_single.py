"""`sharding: fsdp` on one process (a one-GPU pod is not launched through torchrun, cli.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trainer_testkit import sft_rows, spec_for, write_jsonl

pytestmark = pytest.mark.slow  # three runs: ~100 s on the shared 2-core machine


def test_fsdp_on_one_process_trains_checkpoints_dcp_and_resumes(tmp_path: Path, tiny_llama: Path, run_inprocess: Any) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", sft_rows(24, seed=4))
    output = tmp_path / "out"
    spec = spec_for("causal-lm-sft", str(tiny_llama), str(train), str(output), maxSteps=3, sharding="fsdp", learningRate=3e-3)
    spec["output"].update(saveEverySteps=2)
    code, _, err = run_inprocess(spec)
    assert code == 0, err
    manifest = json.loads((output / "checkpoints" / "step-00000003" / "manifest.json").read_text())
    assert {".metadata", "__0_0.distcp"} <= set(manifest["files"])
    first = json.loads((output / "results.json").read_text())
    # A second run on the same output resumes from the final DCP checkpoint and trains nothing more;
    # and a plain run in the same process afterwards is unaffected by the group the first one made.
    code, out, err = run_inprocess(spec)
    assert code == 0, err
    assert "(step 3, epoch" in out + err
    assert json.loads((output / "results.json").read_text())["train_loss"] == first["train_loss"]
    plain = spec_for("causal-lm-sft", str(tiny_llama), str(train), str(tmp_path / "plain"), maxSteps=1)
    code, _, err = run_inprocess(plain)
    assert code == 0, err
