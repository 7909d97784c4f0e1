"""Early stopping exports the best weights, and every checkpoint is evaluated (issue 8 item 9)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from trainer_testkit import classification_rows, spec_for, write_jsonl


def shifted(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """The same texts with every label rotated: the better the model fits train, the worse it scores here."""
    names = sorted({r["label"] for r in rows})
    return [{**r, "label": names[(names.index(r["label"]) + 1) % len(names)]} for r in rows]


def test_early_stopping_exports_the_best_checkpoint_not_the_last_weights(tmp_path: Path, tiny_bert: Path,
                                                                          run_inprocess: Any) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", classification_rows(160, seed=21))
    validation = write_jsonl(tmp_path / "validation.jsonl", shifted(classification_rows(30, seed=22)))
    output = tmp_path / "out"
    spec = spec_for("sequence-classification", str(tiny_bert), str(train), str(output), maxSteps=40, evalEverySteps=2,
                    learningRate=3e-3, earlyStopping={"metric": "eval_loss", "patience": 2})
    spec["dataset"].update(validation=str(validation), split={"validation": 0.0, "test": 0.0})
    code, out, err = run_inprocess(spec)
    assert code == 0, err
    results = json.loads((output / "results.json").read_text())
    history = {h["step"]: h["eval_loss"] for h in results["history"]}
    best = min(history, key=history.get)
    assert best < results["step"]  # the run went past its best, as early stopping does
    assert results["exported_step"] == best
    assert results["validation"]["eval_loss"] == history[best]
    assert json.loads((output / "final" / "tuneloop.json").read_text())["step"] == best
    exported = load_file(str(output / "final" / "model.safetensors"))
    saved = load_file(str(output / "checkpoints" / f"step-{best:08d}" / "model.safetensors"))
    assert saved and all(torch.equal(exported[name], tensor) for name, tensor in saved.items())
    assert f"exporting the best checkpoint, step {best}" in out + err


def test_every_checkpoint_is_evaluated_when_saves_and_evals_do_not_line_up(tmp_path: Path, tiny_bert: Path,
                                                                           run_inprocess: Any) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", classification_rows(120, seed=23))
    output = tmp_path / "out"
    spec = spec_for("sequence-classification", str(tiny_bert), str(train), str(output), maxSteps=8, evalEverySteps=4)
    spec["output"].update(saveEverySteps=3, keepLast=5)
    code, _, err = run_inprocess(spec)
    assert code == 0, err
    manifests = {p.parent.name: json.loads(p.read_text()) for p in (output / "checkpoints").glob("step-*/manifest.json")}
    assert sorted(manifests) == ["step-00000003", "step-00000006", "step-00000008"]  # 8: the final weights
    assert all("eval_loss" in m["metrics"] for m in manifests.values())
