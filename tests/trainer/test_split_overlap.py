"""Validation and test files given apart from train lose the rows they share with it (review item 17)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.trainer.config import PermanentError, RuntimeSettings
from tuneloop.trainer.dataset import load_splits

from trainer_testkit import classification_rows, spec_for, write_jsonl


def splits_for(tmp_path: Path, validation: list[dict[str, str]], **cleaning: bool):
    train = classification_rows(40, seed=1)
    spec = spec_for("sequence-classification", "s3://b/m", str(write_jsonl(tmp_path / "train.jsonl", train)), str(tmp_path / "out"))
    spec["dataset"].update(validation=str(write_jsonl(tmp_path / "validation.jsonl", validation)), split={"validation": 0.0, "test": 0.0},
                           cleaning=cleaning)
    return train, load_splits(FineTuneJobSpec.from_dict(spec), RuntimeSettings(metrics_port=0))


def test_validation_rows_that_are_training_rows_are_dropped_and_counted(tmp_path: Path) -> None:
    held_out = [r for r in classification_rows(30, seed=2) if r not in classification_rows(40, seed=1)][:5]
    train, splits = splits_for(tmp_path, classification_rows(40, seed=1)[:3] + held_out)
    assert splits.validation == held_out
    assert splits.reports["validation"].dropped == {"in_train": 3}
    assert splits.report()["cleaning"]["validation"]["rows_out"] == 5
    assert len(splits.train) == len(train)


def test_overlap_is_kept_when_dedupe_is_off(tmp_path: Path) -> None:
    _, splits = splits_for(tmp_path, classification_rows(40, seed=1)[:3], dedupe=False)
    assert len(splits.validation) == 3


def test_a_validation_file_that_is_all_training_rows_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="every validation row is also a training row"):
        splits_for(tmp_path, classification_rows(40, seed=1)[:4])
