"""dataset.augmentation: pure, seeded, label-preserving word edits on the training split only (issue 14)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from trainer_testkit import classification_rows, regression_rows, spec_for, write_jsonl
from tuneloop.api.finetunejob import AugmentationSpec, FieldMap, FineTuneJobSpec
from tuneloop.trainer.augment import NEAR_ROWS, augment_rows
from tuneloop.trainer.config import RuntimeSettings
from tuneloop.trainer.dataset import load_splits

FIELDS = FieldMap()
VOCAB = {"a": ["apple", "avocado", "apricot", "almond"], "b": ["banana", "bean", "berry", "basil"],
         "c": ["cherry", "carrot", "cocoa", "chili"]}


def class_rows(n: int = 30) -> list[dict[str, Any]]:
    """Each class writes with its own words only, so an inserted word shows where it came from."""
    labels = sorted(VOCAB)
    return [{"text": " ".join(VOCAB[labels[i % 3]][(i + k) % 4] for k in range(3 + i % 4)), "label": labels[i % 3], "id": i}
            for i in range(n)]


def test_the_same_seed_gives_the_same_rows_and_another_seed_others() -> None:
    spec = AugmentationSpec(factor=1.0, deletion=0.2, swap=0.2, insertion=0.2)
    rows = class_rows()
    first, _ = augment_rows(rows, "sequence-classification", FIELDS, spec, seed=7)
    again, _ = augment_rows([dict(r) for r in rows], "sequence-classification", FIELDS, spec, seed=7)
    other, _ = augment_rows(rows, "sequence-classification", FIELDS, spec, seed=8)
    assert first == again
    assert first != other


@pytest.mark.parametrize("factor,added", [(1.0, 30), (0.5, 15), (2.5, 75), (0.01, 0)])
def test_factor_extra_rows_follow_the_real_ones(factor: float, added: int) -> None:
    rows = class_rows()
    out, report = augment_rows(rows, "sequence-classification", FIELDS, AugmentationSpec(factor=factor), seed=1)
    assert out[:30] == rows  # the real rows, untouched, first
    assert len(out) == 30 + added and report.added == added and report.rows_in == 30
    # An extra row is a copy of its source row with only the text changed.
    for extra in out[30:]:
        source = rows[extra["id"]]
        assert {k: v for k, v in extra.items() if k != "text"} == {k: v for k, v in source.items() if k != "text"}


def test_whole_passes_then_a_sample_for_the_fraction() -> None:
    out, _ = augment_rows(class_rows(), "sequence-classification", FIELDS, AugmentationSpec(factor=2.5), seed=3)
    counts = Counter(r["id"] for r in out[30:])
    assert set(counts) == set(range(30)) and sorted(set(counts.values())) == [2, 3]
    assert sum(1 for c in counts.values() if c == 3) == 15


def test_inserted_words_come_from_the_same_class() -> None:
    out, report = augment_rows(class_rows(), "sequence-classification", FIELDS,
                               AugmentationSpec(factor=3.0, deletion=0.0, swap=0.0, insertion=0.5), seed=2)
    assert report.inserted_words > 50 and report.deleted_words == report.swapped_words == 0
    for extra in out[30:]:
        assert set(extra["text"].split()) <= set(VOCAB[extra["label"]]), extra


def test_regression_inserts_words_of_rows_with_a_near_target() -> None:
    rows = [{"text": f"w{i} w{i}", "label": float(i) * 0.5} for i in range(20)]  # rows sorted by target: ranks = i
    out, report = augment_rows(rows, "regression", FIELDS, AugmentationSpec(factor=2.0, deletion=0.0, swap=0.0, insertion=0.6), seed=4)
    assert report.inserted_words > 20
    for extra in out[20:]:
        own = int(extra["label"] / 0.5)
        words = extra["text"].split()
        assert words[0] == f"w{own}"  # no deletion or swap: the row's own words come first
        donors = {int(w[1:]) for w in words} - {own}
        assert all(0 < abs(d - own) <= NEAR_ROWS for d in donors), (own, donors)


def test_deletion_keeps_a_word_and_swap_keeps_the_words() -> None:
    rows = [{"text": "solo", "label": "a"}, {"text": "one two three four five six", "label": "b"}]
    out, report = augment_rows(rows, "sequence-classification", FIELDS,
                               AugmentationSpec(factor=10.0, deletion=0.99, swap=0.0, insertion=0.0), seed=5)
    assert all(r["text"] for r in out) and report.deleted_words > 0
    out, report = augment_rows(rows, "sequence-classification", FIELDS,
                               AugmentationSpec(factor=10.0, deletion=0.0, swap=0.5, insertion=0.0), seed=5)
    assert report.swapped_words > 0
    for extra in out[2:]:
        source = rows[0] if extra["label"] == "a" else rows[1]
        assert sorted(extra["text"].split()) == sorted(source["text"].split())
    assert any(r["text"] != rows[1]["text"] for r in out[2:] if r["label"] == "b")


def _spec(train: Path, augmentation: dict | None, task: str = "sequence-classification") -> FineTuneJobSpec:
    dataset: dict[str, Any] = {"train": str(train), "split": {"validation": 0.2, "test": 0.2, "seed": 3}}
    if augmentation is not None:
        dataset["augmentation"] = augmentation
    return FineTuneJobSpec.from_dict({"task": task, "model": {"source": "m"}, "dataset": dataset,
                                      "output": {"uri": "out"}, "training": {"seed": 11}})


def test_only_the_training_split_is_augmented_and_the_report_counts_it(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", classification_rows(100, seed=6))
    plain = load_splits(_spec(train, None), RuntimeSettings())
    augmented = load_splits(_spec(train, {"factor": 1.5}), RuntimeSettings())
    assert "augmentation" not in plain.report()  # off by default
    assert augmented.validation == plain.validation and augmented.test == plain.test
    assert augmented.train[:len(plain.train)] == plain.train
    n = len(plain.train)
    report = augmented.report()
    assert report["rows"]["train"] == n + round(1.5 * n)
    assert report["augmentation"]["rows_in"] == n and report["augmentation"]["added"] == round(1.5 * n)
    assert report["augmentation"]["factor"] == 1.5 and report["augmentation"]["deletion"] == 0.1
    # evaluate-only scores real rows: --split train is not augmented
    assert load_splits(_spec(train, {"factor": 1.5}), RuntimeSettings(), augment=False).train == plain.train


def test_a_run_trains_on_the_extra_rows_and_reports_them(tmp_path: Path, tiny_bert: Path, run_inprocess: Any) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", regression_rows(80, seed=7))
    spec = spec_for("regression", str(tiny_bert), str(train), str(tmp_path / "out"), epochs=1)
    spec["dataset"]["augmentation"] = {"factor": 1.0, "deletion": 0.1, "swap": 0.1, "insertion": 0.1}
    code, out, err = run_inprocess(spec)
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "data_report.json").read_text())
    n = report["augmentation"]["rows_in"]
    assert report["rows"]["train"] == 2 * n and report["tokenized"]["train"] == 2 * n
    assert f"augmentation: {n} extra training rows from {n}" in out
