"""The final report: one JSON line in the termination message file, read by the operator into status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from trainer_testkit import classification_rows, spec_for, write_jsonl
from tuneloop.trainer.cli import REPORT_MAX_BYTES, final_report

RESULTS = {
    "step": 6, "total_steps": 40, "epoch": 0.25, "train_loss": 1.1,
    "validation": {"eval_loss": 1.0, "accuracy": 0.5, "macro_f1": 0.4},
    "test": {"eval_loss": 0.9, "accuracy": 0.6, "macro_f1": 0.55},
    "final_model": "s3://b/runs/x/final", "best_checkpoint": "s3://b/runs/x/checkpoints/step-00000002",
    "history": [{"step": 2, "eval_loss": 1.0}], "train_seconds": 3.2,
}


@pytest.mark.parametrize("overrides, metrics, checkpoints", [
    # Validation loss stays eval_loss (as while training); test metrics win by name; test loss is test_loss.
    ({}, {"train_loss": 1.1, "eval_loss": 1.0, "accuracy": 0.6, "macro_f1": 0.55, "test_loss": 0.9},
     {"final": "s3://b/runs/x/final/", "best": "s3://b/runs/x/checkpoints/step-00000002"}),
    # No validation or test data, no best checkpoint.
    ({"validation": None, "test": None, "best_checkpoint": None}, {"train_loss": 1.1}, {"final": "s3://b/runs/x/final/"}),
    # Numbers only: NaN, None and strings never reach a `type: number` status field.
    ({"train_loss": float("nan"), "validation": {"eval_loss": None, "accuracy": "0.5"}, "test": {"accuracy": float("inf")}},
     {}, {"final": "s3://b/runs/x/final/", "best": "s3://b/runs/x/checkpoints/step-00000002"}),
    # Oversized: metrics go first, then the checkpoints; what is left still parses.
    ({"validation": {f"metric_{i:03d}": 0.123456 for i in range(300)}}, {"train_loss": 1.1, "metric_000": 0.123456},
     None),
    ({"final_model": "s3://b/" + "x" * 3000}, {}, {}),
    # The newest complete checkpoint after pruning, so status never names a deleted one.
    ({"latest_checkpoint": "s3://b/runs/x/checkpoints/step-00000006"},
     {"train_loss": 1.1, "eval_loss": 1.0, "accuracy": 0.6, "macro_f1": 0.55, "test_loss": 0.9},
     {"final": "s3://b/runs/x/final/", "best": "s3://b/runs/x/checkpoints/step-00000002",
      "latest": "s3://b/runs/x/checkpoints/step-00000006"}),
], ids=["full", "train-only", "non-numbers", "many-metrics", "huge-uri", "latest"])
def test_final_report(overrides: dict, metrics: dict, checkpoints: dict | None) -> None:
    line = final_report({**RESULTS, **overrides})
    assert "\n" not in line and len(line.encode()) <= REPORT_MAX_BYTES < 4096
    report = json.loads(line)
    assert (report["step"], report["totalSteps"], report["epoch"]) == (6, 40, 0.25)
    if overrides.get("validation") and len(overrides["validation"]) > 100:
        assert set(report["metrics"]) >= set(metrics) and len(report["metrics"]) < 300
    else:
        assert report["metrics"] == metrics
    if checkpoints is not None:
        assert report["checkpoints"] == checkpoints


def test_final_report_keeps_validation_metrics_apart_from_test_ones() -> None:
    """A search selects on validation (issue 14): `metrics` lets test accuracy win by name."""
    report = json.loads(final_report(RESULTS))
    assert report["metrics"]["accuracy"] == 0.6
    assert report["validation"] == {"eval_loss": 1.0, "accuracy": 0.5, "macro_f1": 0.4}
    assert "validation" not in json.loads(final_report({**RESULTS, "validation": None}))


def test_training_writes_the_final_report_to_the_termination_log(tmp_path: Path, tiny_bert: Path, run_inprocess: Any,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # Early stopping ends it at step 6 of 40 (see test_recipe): the report must say so, not 40/40.
    log = tmp_path / "pod" / "termination-log"
    log.parent.mkdir()
    monkeypatch.setenv("TUNELOOP_TERMINATION_LOG", str(log))
    train = write_jsonl(tmp_path / "cls.jsonl", classification_rows(200, seed=8))
    output = tmp_path / "out"
    spec = spec_for("sequence-classification", str(tiny_bert), str(train), str(output), maxSteps=40, evalEverySteps=2,
                    learningRate=1e-12, earlyStopping={"metric": "accuracy", "patience": 2})
    code, _, err = run_inprocess(spec)
    assert code == 0, err
    text = log.read_text()
    assert len(text.encode()) < 4096 and text.count("\n") == 0
    report = json.loads(text)
    results = json.loads((output / "results.json").read_text())
    assert (report["step"], report["totalSteps"]) == (6, 40)
    assert report["metrics"]["accuracy"] == results["test"]["accuracy"]
    assert report["metrics"]["eval_loss"] == results["validation"]["eval_loss"]
    assert all(isinstance(v, (int, float)) for v in report["metrics"].values())
    assert report["checkpoints"]["final"] == f"{output}/final/"


def test_failure_line_goes_to_the_termination_log(tmp_path: Path, run_inprocess: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "termination-log"
    monkeypatch.setenv("TUNELOOP_TERMINATION_LOG", str(log))
    code, _, err = run_inprocess(None, config=tmp_path / "missing.yaml")
    assert code == 2
    assert log.read_text() == err.strip().splitlines()[-1] + "\n"
    assert log.read_text().startswith("tuneloop-train: error: cannot read config")


def test_nothing_is_written_where_no_termination_log_is_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tuneloop.trainer import cli

    monkeypatch.delenv("TUNELOOP_TERMINATION_LOG", raising=False)
    monkeypatch.setattr(cli.RuntimeSettings, "termination_log", str(tmp_path / "absent"))
    assert cli.termination_log() is None
    monkeypatch.setenv("TUNELOOP_TERMINATION_LOG", str(tmp_path / "no-such-dir" / "log"))
    assert cli.termination_log() is None
