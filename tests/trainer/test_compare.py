"""`--evaluate-only` with several `--model`s: the promotion gate's one run, same rows for every model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trainer_testkit import classification_rows, spec_for, write_jsonl


def test_challenger_and_champion_are_scored_on_the_same_rows_and_reported(
        tiny_bert: Path, run_inprocess: Any, tmp_path: Path, monkeypatch: Any) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", classification_rows(200, seed=11))
    output = tmp_path / "out"
    spec = spec_for("sequence-classification", str(tiny_bert), str(train), str(output), maxSteps=100, maxSeqLength=16, packing=False)
    code, _, err = run_inprocess(spec)
    assert code == 0, err

    fresh = write_jsonl(tmp_path / "fresh.jsonl", classification_rows(48, seed=12))
    log = tmp_path / "termination-log"
    log.touch()
    monkeypatch.setenv("TUNELOOP_TERMINATION_LOG", str(log))
    challenger = str(output / "final")
    code, out, err = run_inprocess(spec, "--evaluate-only", "--model", challenger, "--model", str(tiny_bert),
                                   "--data", str(fresh), "--results", str(tmp_path / "gate.json"))
    assert code == 0, err
    report = json.loads(log.read_text())
    assert [m["model"] for m in report["models"]] == [challenger, str(tiny_bert)]  # challenger first, as asked
    assert report["rows"] == 48 and all(m["rows"] == 48 for m in report["models"])
    trained, base = (m["metrics"] for m in report["models"])
    assert trained["eval_loss"] < base["eval_loss"], report  # the fine-tuned model learned the topics; the base did not
    results = json.loads((tmp_path / "gate.json").read_text())
    assert results["models"] == [{k: m[k] for k in ("model", "rows", "metrics")} for m in results["models"]]
    assert results["model"] == challenger and results["metrics"] == results["models"][0]["metrics"]
    assert out.count("tuneloop-train: ") == 2  # one line per model


def test_new_data_check_counts_objects_after_the_watermark(s3: Any, run_inprocess: Any, tmp_path: Path,
                                                           monkeypatch: Any) -> None:
    from datetime import timezone

    from trainer_testkit import BUCKET, upload_jsonl

    upload_jsonl(s3, "incoming/old.jsonl", classification_rows(5, seed=1))
    # The watermark is the old object's own time (what a check would have reported as newest).
    old = s3.head_object(Bucket=BUCKET, Key="incoming/old.jsonl")["LastModified"]
    since = old.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    import time
    time.sleep(1.1)  # S3 times are whole seconds: the next objects are strictly newer
    upload_jsonl(s3, "incoming/a.jsonl", classification_rows(5, seed=2))
    upload_jsonl(s3, "incoming/b.jsonl", classification_rows(5, seed=3))
    upload_jsonl(s3, "elsewhere/c.jsonl", classification_rows(5, seed=4))
    log = tmp_path / "termination-log"
    log.touch()
    monkeypatch.setenv("TUNELOOP_TERMINATION_LOG", str(log))
    spec = spec_for("sequence-classification", "s3://models/base", "s3://data/train.jsonl", str(tmp_path / "out"))
    code, out, err = run_inprocess(spec, "--new-data", f"s3://{BUCKET}/incoming/", "--since", since)
    assert code == 0, err
    report = json.loads(log.read_text())
    sizes = [o["Size"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="incoming/")["Contents"] if not o["Key"].endswith("old.jsonl")]
    assert (report["objects"], report["bytes"], report["since"]) == (2, sum(sizes), since)
    assert report["newest"] >= since
    code, _, _ = run_inprocess(spec, "--new-data", f"s3://{BUCKET}/incoming/")
    assert code == 0 and json.loads(log.read_text())["objects"] == 3  # no watermark: everything
