"""Recipe tests on tiny models: each task learns, artifacts land in S3 (moto over HTTP), LoRA, evaluate-only."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from trainer_testkit import (BUCKET, classification_rows, list_keys, read_json, regression_rows, sft_rows, spec_for,
                      upload_jsonl)


def test_sft_loss_falls_and_artifacts_land_in_s3(s3: Any, tiny_llama_s3: str, run_inprocess: Any) -> None:
    train = upload_jsonl(s3, "data/sft/train.jsonl", sft_rows(240, seed=1))
    output = f"s3://{BUCKET}/runs/sft"
    code, out, err = run_inprocess(spec_for("causal-lm-sft", tiny_llama_s3, train, output, evalEverySteps=10, batchSize=2, epochs=5,
                                            warmupRatio=0.1, scheduler="cosine", weightDecay=0.01))
    assert code == 0, err
    results = read_json(s3, "runs/sft/results.json")
    assert results["test"]["eval_loss"] < 0.6 * results["test_before"]["eval_loss"]
    history = [h["eval_loss"] for h in results["history"]]
    assert history[-1] < history[0]
    assert "perplexity" in results["validation"]
    final = list_keys(s3, "runs/sft/final/")
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tuneloop.json"):
        assert f"runs/sft/final/{name}" in final
    report = read_json(s3, "runs/sft/data_report.json")
    assert report["cleaning"]["train"]["rows_in"] == 240
    assert report["cleaning"]["train"]["dropped"].get("duplicate", 0) > 0  # sft_rows repeats pairs
    # On CPU (sdpa, no variable-length kernel) SFT trains on length-grouped batches, not packed rows (issue 15).
    assert report["tokenized"]["batching"] == "length-grouped" and "packing_efficiency" not in report["tokenized"]
    assert "model written to s3://tuneloop-test/runs/sft/final" in out


def test_classification_beats_chance_from_parquet_glob(s3: Any, tiny_bert_s3: str, run_inprocess: Any) -> None:
    rows = classification_rows(360, seed=2)
    for i in range(3):  # three parts under a prefix, read through a glob
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows[i::3]), buf)
        s3.put_object(Bucket=BUCKET, Key=f"data/cls/part-{i}.parquet", Body=buf.getvalue())
    s3.put_object(Bucket=BUCKET, Key="data/cls/_SUCCESS", Body=b"")
    code, out, err = run_inprocess(spec_for("sequence-classification", tiny_bert_s3, f"s3://{BUCKET}/data/cls/part-*.parquet",
                                            f"s3://{BUCKET}/runs/cls", epochs=6))
    assert code == 0, err
    results = read_json(s3, "runs/cls/results.json")
    assert results["test"]["accuracy"] >= 0.8  # chance is 1/3
    assert results["test"]["macro_f1"] >= 0.75
    config = json.loads(s3.get_object(Bucket=BUCKET, Key="runs/cls/final/config.json")["Body"].read())
    assert config["id2label"] == {"0": "billing", "1": "sales", "2": "tech"}  # label names saved with the model


def test_regression_error_falls_from_local_csv(tmp_path: Path, tiny_bert: Path, run_inprocess: Any) -> None:
    csv = tmp_path / "reg.csv"
    csv.write_text("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in regression_rows(300, seed=3)))
    output = tmp_path / "out"
    code, _, err = run_inprocess(spec_for("regression", str(tiny_bert), str(csv), str(output), epochs=8))
    assert code == 0, err
    results = json.loads((output / "results.json").read_text())
    assert results["test"]["mse"] < 0.5 * results["test_before"]["mse"]
    assert results["test"]["mae"] < results["test_before"]["mae"]


def test_lora_exports_adapter_and_merged_model_then_evaluate_only_scores_it(
        s3: Any, tiny_llama_s3: str, run_inprocess: Any, tmp_path: Path) -> None:
    train = upload_jsonl(s3, "data/sft-lora/train.jsonl", sft_rows(160, seed=4))
    output = f"s3://{BUCKET}/runs/lora"
    spec = spec_for("causal-lm-sft", tiny_llama_s3, train, output, method="lora", learningRate=1e-2,
                    lora={"r": 4, "alpha": 8, "dropout": 0.0, "merge": True}, gradientCheckpointing=True,
                    batchSize=2, epochs=4)
    code, _, err = run_inprocess(spec)
    assert code == 0, err
    final = list_keys(s3, "runs/lora/final/")
    assert "runs/lora/final/adapter_model.safetensors" in final
    assert "runs/lora/final/merged/model.safetensors" in final
    trained = read_json(s3, "runs/lora/results.json")["test"]["eval_loss"]

    fresh = upload_jsonl(s3, "data/sft-lora/fresh.jsonl", sft_rows(40, seed=99))
    code, out, err = run_inprocess(spec, "--evaluate-only", "--data", fresh)
    assert code == 0, err
    scored = read_json(s3, "runs/lora/evaluation/results.json")
    assert scored["model"] == f"{output}/final" and scored["rows"] > 0
    assert scored["metrics"]["eval_loss"] < 1.5 * trained  # the fine-tuned model, not the base
    code, _, err = run_inprocess(spec, "--evaluate-only", "--model", tiny_llama_s3, "--results", str(tmp_path / "base.json"))
    assert code == 0, err
    base = json.loads((tmp_path / "base.json").read_text())
    assert base["metrics"]["eval_loss"] > scored["metrics"]["eval_loss"]


def test_chat_messages_train_with_the_chat_template(tmp_path: Path, run_inprocess: Any) -> None:
    from trainer_testkit import CHAT_TEMPLATE, build_tiny_model, write_jsonl

    model = build_tiny_model("llama", tmp_path / "chat-llama", chat_template=CHAT_TEMPLATE)
    rows = [{"conversation": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["response"]}]}
            for r in sft_rows(200, seed=5)]
    train = write_jsonl(tmp_path / "chat.jsonl", rows)
    spec = spec_for("causal-lm-sft", str(model), str(train), str(tmp_path / "out"), batchSize=2, epochs=5)
    spec["dataset"]["fields"] = {"messages": "conversation"}
    code, _, err = run_inprocess(spec)
    assert code == 0, err
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["test"]["eval_loss"] < 0.6 * results["test_before"]["eval_loss"]


def test_checkpoints_are_pruned_keeping_the_best(tmp_path: Path, tiny_bert: Path, run_inprocess: Any) -> None:
    from trainer_testkit import write_jsonl

    train = write_jsonl(tmp_path / "cls.jsonl", classification_rows(200, seed=6))
    output = tmp_path / "out"
    spec = spec_for("sequence-classification", str(tiny_bert), str(train), str(output), epochs=4, evalEverySteps=4,
                    earlyStopping={"metric": "accuracy", "patience": 100})
    spec["output"].update(saveEverySteps=4, keepLast=2)
    code, _, err = run_inprocess(spec)
    assert code == 0, err
    manifests = {int(p.parent.name[5:]): json.loads(p.read_text()) for p in (output / "checkpoints").glob("step-*/manifest.json")}
    steps = sorted(manifests)
    last = json.loads((output / "results.json").read_text())["step"]
    all_saved = sorted(set(range(4, last, 4)) | {last})  # every 4 steps, and the final weights
    best = max(all_saved, key=lambda s: next(h["accuracy"] for h in json.loads((output / "results.json").read_text())["history"] if h["step"] == s))
    assert steps[-2:] == all_saved[-2:]
    assert set(steps) == set(all_saved[-2:]) | {best}
    assert all(p.is_dir() for p in (output / "checkpoints").iterdir())
    assert len(list((output / "checkpoints").iterdir())) == len(steps)  # pruned folders are gone


def test_a_crash_in_the_export_resumes_from_the_final_weights(tmp_path: Path, tiny_bert: Path, run_inprocess: Any) -> None:
    """Review item 17: the last step is checkpointed before the export, so a retry does not retrain the tail."""
    from trainer_testkit import write_jsonl

    train = write_jsonl(tmp_path / "cls.jsonl", classification_rows(100, seed=8))
    output = tmp_path / "out"
    spec = spec_for("sequence-classification", str(tiny_bert), str(train), str(output), maxSteps=5)
    spec["output"].update(saveEverySteps=2, keepLast=5)
    output.mkdir()
    (output / "final").write_text("a file where the export's folder goes: the export fails")
    code, _, err = run_inprocess(spec)
    assert code != 0 and "final" in err
    saved = sorted(p.parent.name for p in (output / "checkpoints").glob("step-*/manifest.json"))
    assert saved == ["step-00000002", "step-00000004", "step-00000005"]
    (output / "final").unlink()
    code, out, err = run_inprocess(spec)
    assert code == 0, err
    assert "(step 5, epoch" in out + err  # resumed from the final weights: nothing retrained
    results = json.loads((output / "results.json").read_text())
    assert results["step"] == 5 and (output / "final" / "model.safetensors").exists()


def test_time_based_checkpoints(tmp_path: Path, tiny_bert: Path, run_inprocess: Any) -> None:
    from trainer_testkit import write_jsonl

    train = write_jsonl(tmp_path / "cls.jsonl", classification_rows(100, seed=7))
    output = tmp_path / "out"
    spec = spec_for("sequence-classification", str(tiny_bert), str(train), str(output), maxSteps=6)
    spec["output"].update(saveEveryMinutes=1e-9, keepLast=10)  # 60 ns: due after every step, however fast a step is
    code, _, err = run_inprocess(spec)
    assert code == 0, err
    saved = sorted(p.parent.name for p in (output / "checkpoints").glob("step-*/manifest.json"))
    assert saved == [f"step-{s:08d}" for s in range(1, 7)]


def test_early_stopping_stops_once_patience_runs_out(tmp_path: Path, tiny_bert: Path, run_inprocess: Any) -> None:
    from trainer_testkit import write_jsonl

    # A learning rate this small cannot move accuracy: after the first evaluation sets the best,
    # every later one is "no improvement", so a patience of 2 stops at the third evaluation.
    train = write_jsonl(tmp_path / "cls.jsonl", classification_rows(200, seed=8))
    output = tmp_path / "out"
    spec = spec_for("sequence-classification", str(tiny_bert), str(train), str(output), maxSteps=40, evalEverySteps=2,
                    learningRate=1e-12, earlyStopping={"metric": "accuracy", "patience": 2})
    code, out, err = run_inprocess(spec)
    assert code == 0, err
    results = json.loads((output / "results.json").read_text())
    assert results["step"] == 6 and results["total_steps"] == 40
    assert [h["step"] for h in results["history"]][:3] == [2, 4, 6]
    assert "early stopping at step 6" in out + err
