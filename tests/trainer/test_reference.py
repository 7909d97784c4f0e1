"""Reference check: the recipe and a plain `transformers.Trainer` agree.

Same tiny model, same tokenised data, seed and hyperparameters (AdamW with weight decay off
biases and norms, linear warmup and decay, clipping at 1.0, batch 8, shuffled padded batches as the
Trainer pads). Only the shuffling differs (each has its own sampler), so after training both
must land within 2% of each other on validation loss.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneloop.api.finetunejob import FieldMap
from tuneloop.trainer import data
from trainer_testkit import build_tokenizer, sft_rows, spec_for, write_jsonl

HPARAMS = {"learningRate": 2e-3, "batchSize": 8, "epochs": 4, "weightDecay": 0.01, "warmupRatio": 0.1,
           "scheduler": "linear", "maxGradNorm": 1.0, "maxSeqLength": 32, "seed": 3, "batching": "shuffled"}


def test_final_validation_loss_matches_transformers_trainer(tmp_path: Path, tiny_llama: Path, run_inprocess: Any) -> None:
    import torch
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    train_rows, val_rows = sft_rows(256, seed=21), sft_rows(48, seed=22)
    train, validation = write_jsonl(tmp_path / "train.jsonl", train_rows), write_jsonl(tmp_path / "val.jsonl", val_rows)
    spec = spec_for("causal-lm-sft", str(tiny_llama), str(train), str(tmp_path / "out"), **HPARAMS)
    spec["dataset"].update(validation=str(validation), split={"test": 0.0}, cleaning={"dedupe": False})
    code, _, err = run_inprocess(spec)
    assert code == 0, err
    ours = json.loads((tmp_path / "out" / "results.json").read_text())

    tokenizer = build_tokenizer("llama")
    encode = lambda rows: [data.encode_sft(r, tokenizer, FieldMap(), 32) for r in rows]  # noqa: E731

    def collate(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = data.collate_padded(examples, tokenizer.pad_token_id)
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "labels": batch["labels"]}

    args = TrainingArguments(
        output_dir=str(tmp_path / "hf"), per_device_train_batch_size=8, per_device_eval_batch_size=len(val_rows),
        num_train_epochs=4, learning_rate=2e-3, weight_decay=0.01, warmup_steps=0.1, lr_scheduler_type="linear",
        max_grad_norm=1.0, seed=3, use_cpu=True, report_to="none", save_strategy="no", eval_strategy="no",
        logging_strategy="no", disable_tqdm=True, remove_unused_columns=False,
    )
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama))
    trainer = Trainer(model=model, args=args, train_dataset=encode(train_rows), eval_dataset=encode(val_rows), data_collator=collate)
    trainer.train()
    theirs = trainer.evaluate()["eval_loss"]

    base = ours["history"][0]["eval_loss"] if ours["history"] else None
    assert ours["step"] == trainer.state.global_step  # same number of optimizer steps
    print(f"reference check: recipe {ours['validation']['eval_loss']:.4f} vs transformers.Trainer {theirs:.4f}")
    assert abs(ours["validation"]["eval_loss"] - theirs) / theirs < 0.02, (ours["validation"]["eval_loss"], theirs, base)
    assert theirs < 2.0  # both really trained (the untrained model is near ln(vocab) = 4.3)
