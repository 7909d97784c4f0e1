"""Bad inputs end with exit code 2 (permanent: the operator fails the Job at once) and one
clear last line on stderr saying what is wrong and how to fix it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from trainer_testkit import BUCKET, build_tiny_model, classification_rows, spec_for, upload_dir, write_jsonl


def last_line(err: str) -> str:
    return err.strip().splitlines()[-1]


def cls_spec(model: str, train: str, out: str, **extra: Any) -> dict[str, Any]:
    spec = spec_for("sequence-classification", model, train, out, maxSteps=2)
    spec["dataset"].update(extra)
    return spec


@pytest.mark.parametrize(
    ("rows", "name", "extra", "expected"),
    [
        ([{"body": "refund please", "label": "billing"}] * 3, "train.jsonl", {},
         r"missing column `text` in .*train.jsonl \(columns: body, label\); rename it or map it with dataset.fields"),
        ([{"text": "ok", "label": "billing"}] * 120, "train.jsonl", {"cleaning": {"minLength": 5}},
         r"train dataset empty after cleaning: 120 rows dropped as too short \(see dataset.cleaning\)"),
        ([{"text": " ", "label": "billing"}, {"text": "ok", "label": None}], "train.jsonl", {},
         r"train dataset empty after cleaning: 2 rows dropped as empty"),
        ([], "train.jsonl", {}, r"train data at .*train.jsonl is empty"),
        ([{"text": "a b", "label": "x"}], "train.txt", {}, r"cannot tell the format of train.txt; set dataset.format to one of: jsonl, csv, parquet"),
        ([{"text": "a b", "label": "x"}] * 5, "train.jsonl", {"format": "parquet"}, r"train.jsonl is not a valid Parquet file"),
        ([{"text": "only one class here", "label": "x"}, {"text": "and another row", "label": "x"}], "train.jsonl",
         {"split": {"validation": 0.0, "test": 0.0}}, r"classification needs at least 2 labels in column `label`"),
    ],
    ids=["missing-column", "all-too-short", "all-empty", "empty-file", "unknown-format", "wrong-format", "one-label"],
)
def test_bad_data_exits_2_with_a_clear_line(tmp_path: Path, tiny_bert: Path, run_inprocess: Any, rows: list, name: str,
                                            extra: dict, expected: str) -> None:
    train = write_jsonl(tmp_path / name, rows)
    code, _, err = run_inprocess(cls_spec(str(tiny_bert), str(train), str(tmp_path / "out"), **extra))
    assert code == 2
    assert last_line(err).startswith("tuneloop-train: error: ")
    assert len(err.strip().splitlines()) == 1, err  # one line, no traceback
    import re
    assert re.search(expected, last_line(err)), last_line(err)


def test_invalid_json_line_is_named(tmp_path: Path, tiny_bert: Path, run_inprocess: Any) -> None:
    train = tmp_path / "train.jsonl"
    train.write_text('{"text": "fine", "label": "a"}\n{"text": "broken", label: b}\n')
    code, _, err = run_inprocess(cls_spec(str(tiny_bert), str(train), str(tmp_path / "out")))
    assert code == 2
    assert "train.jsonl line 2 is not valid JSON" in last_line(err)


def test_missing_data_files_are_named(s3: Any, tiny_bert: Path, run_inprocess: Any, tmp_path: Path) -> None:
    code, _, err = run_inprocess(cls_spec(str(tiny_bert), f"s3://{BUCKET}/nothing/here/*.jsonl", str(tmp_path / "out")))
    assert code == 2
    assert last_line(err) == f"tuneloop-train: error: no data files at s3://{BUCKET}/nothing/here/*.jsonl; check the path, prefix or glob"


def test_pickle_weights_are_refused_before_download(s3: Any, tmp_path: Path, run_inprocess: Any) -> None:
    model = build_tiny_model("bert", tmp_path / "model")
    from safetensors.torch import load_file

    torch.save(load_file(str(model / "model.safetensors")), model / "pytorch_model.bin")
    (model / "model.safetensors").unlink()
    source = upload_dir(s3, model, "models/pickled-bert")
    train = write_jsonl(tmp_path / "train.jsonl", classification_rows(30))
    code, _, err = run_inprocess(cls_spec(source, str(train), str(tmp_path / "out")))
    assert code == 2
    assert last_line(err) == (
        f"tuneloop-train: error: model at {source} has only pickle weights (pytorch_model.bin); Tuneloop loads "
        "safetensors only because pickle files can run arbitrary code: convert them (model.save_pretrained(dir)) and retry"
    )
    assert not (tmp_path / "cache" / "models").exists() or not any((tmp_path / "cache" / "models").iterdir())


def test_model_prefix_without_config_is_named(s3: Any, tmp_path: Path, run_inprocess: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="models/empty/README.md", Body=b"nothing here")
    train = write_jsonl(tmp_path / "train.jsonl", classification_rows(30))
    code, _, err = run_inprocess(cls_spec(f"s3://{BUCKET}/models/empty", str(train), str(tmp_path / "out")))
    assert code == 2
    assert last_line(err) == (f"tuneloop-train: error: model prefix s3://{BUCKET}/models/empty holds no config.json; "
                              "point model.source at a Hugging Face model folder")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, r"cannot read config .*missing.yaml: No such file or directory; pass --config FILE"),
        ("task: [unclosed", r"config .*config.yaml is not valid YAML: "),
        ("- just\n- a list\n", r"must be a FineTuneJob spec \(a mapping\), got list"),
        ("task: regression\nmodel: {source: m}\ndataset: {train: t.jsonl}\noutput: {uri: o}\ntraining: {bogus: 1}\n",
         r"spec.training.bogus: unknown field"),
        ("task: translation\nmodel: {source: m}\ndataset: {train: t.jsonl}\noutput: {uri: o}\n",
         r"spec.task: 'translation' is not allowed"),
        ("task: regression\nmodel: {source: m}\ndataset: {train: t.jsonl}\noutput: {uri: 'gs://b/o'}\n",
         r"spec.output.uri: scheme 'gs' is not supported"),
    ],
    ids=["missing-file", "bad-yaml", "not-a-mapping", "unknown-field", "bad-enum", "bad-uri"],
)
def test_bad_config_exits_2_with_a_clear_line(tmp_path: Path, run_inprocess: Any, content: str | None, expected: str) -> None:
    import re

    config = tmp_path / ("missing.yaml" if content is None else "config.yaml")
    if content is not None:
        config.write_text(content)
    code, _, err = run_inprocess(None, config=config)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert re.search(expected, last_line(err)), last_line(err)
