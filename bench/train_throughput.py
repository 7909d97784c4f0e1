"""Benchmark 1 of issue 15: the recipe's SFT throughput against transformers.Trainer, side by side.

    PYTHONPATH=operator:trainer:tests/trainer python3 bench/train_throughput.py [--samples 600] [--recipe length-grouped packed]

One invocation runs, one after another, on the same tiny model (a 4-layer, 256-wide Llama
built from a config, random weights, no download), the same data (`--samples` SFT rows of
16-512 tokens, log-normal lengths, the loss on the last two thirds: a copy task), the same
seed, hyperparameters (1 epoch, batch 8, AdamW lr 1e-3, 10% warmup then linear, clip 1.0,
fp32) and number of samples:

* the recipe, once per `--recipe` batching (default: what `batching: auto` picks here);
* `transformers.Trainer` with a padding collator (random batches);
* `transformers.Trainer` with `train_sampling_strategy="group_by_length"`.

It prints, for each: useful (non-padding) tokens per second of wall time and per CPU second
of this process (the machine may be shared: CPU seconds are less disturbed by other load),
the share of computed tokens that were padding (for packed rows also the share of the
attention computed that the block-diagonal mask threw away), and the validation loss of the
final weights, all scored by the same function on the same held-out rows. Then the ratios
against the best Trainer setting. A benchmark that prints; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.trainer import batching, data
from tuneloop.trainer.config import RuntimeSettings
from tuneloop.trainer.recipe import Recipe

from trainer_testkit import COLORS, FRUITS, NOISE, VOCAB, build_tokenizer, write_jsonl

WORDS = sorted(set(COLORS + FRUITS + NOISE))
HYPER = {"epochs": 1, "batchSize": 8, "learningRate": 1e-3, "warmupRatio": 0.1, "scheduler": "linear",
         "maxGradNorm": 1.0, "weightDecay": 0.0, "precision": "fp32", "maxSeqLength": 512, "seed": 7}


def build_model(path: Path, hidden: int = 256, layers: int = 4) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(VOCAB), hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                         num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64, max_position_embeddings=1024,
                         pad_token_id=0, bos_token_id=VOCAB.index("<s>"), eos_token_id=VOCAB.index("</s>"))
    LlamaForCausalLM(config).save_pretrained(str(path))
    build_tokenizer("llama").save_pretrained(str(path))
    return path


def copy_rows(n: int, seed: int) -> list[dict[str, str]]:
    """Rows of 16-512 tokens (log-normal): a prompt of a third, a response that repeats it twice (the last two thirds)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        total = min(512, max(16, int(rng.lognormvariate(math.log(110), 0.8))))
        prompt = [rng.choice(WORDS) for _ in range(max(5, (total - 3) // 3))]  # <s> prompt \n response </s>
        rows.append({"prompt": " ".join(prompt), "response": " ".join(prompt + prompt)})
    return rows


def encode(rows: list[dict[str, str]], tokenizer: Any) -> list[dict[str, list[int]]]:
    from tuneloop.api.finetunejob import FieldMap

    return [ex for ex in (data.encode_sft(r, tokenizer, FieldMap(), HYPER["maxSeqLength"]) for r in rows) if ex]


@torch.no_grad()
def validation_loss(model: Any, examples: list[dict[str, list[int]]]) -> float:
    """Mean target-token loss of the final weights; the same function for every contender."""
    model.eval()
    total, count = 0.0, 0
    ordered = sorted(examples, key=lambda ex: len(ex["input_ids"]))
    for start in range(0, len(ordered), 8):
        batch = data.collate_padded(ordered[start:start + 8], 0)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits.float()
        total += torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), batch["labels"][:, 1:].reshape(-1),
                                                   ignore_index=data.IGNORE_INDEX, reduction="sum").item()
        count += data.count_loss_tokens(ordered[start:start + 8])
    return total / count


class TimedRecipe(Recipe):
    """The recipe, with the clock stopped when the loop ends (before the final evaluation and export)."""

    def finish(self) -> dict[str, Any]:
        self.loop_ended = (time.perf_counter(), time.process_time())
        return super().finish()


def run_recipe(model: Path, work: Path, train: Path, validation: list[dict[str, list[int]]], batching_name: str,
               extra: dict[str, Any]) -> dict[str, Any]:
    training = {**HYPER, **({} if batching_name == "auto" else {"batching": batching_name}), **extra}
    spec = FineTuneJobSpec.from_dict({
        "task": "causal-lm-sft", "model": {"source": str(model)},
        "dataset": {"train": str(train), "split": {"validation": 0, "test": 0}, "cleaning": {"dedupe": False}},
        "output": {"uri": str(work / f"out-{batching_name}")}, "training": training})
    recipe = TimedRecipe(spec, RuntimeSettings(metrics_port=0, cache_dir=str(work / "cache"), progress="never"), log=lambda _: None)
    recipe.setup(resume=False)
    plan = recipe.epoch_plan(0)  # one epoch
    lengths = recipe.train_lengths
    sequences = recipe.examples["train"]
    useful = sum(len(ex["input_ids"]) for ex in sequences)
    if recipe.packed:
        width_rows = [max(len(recipe.train_items[i]["input_ids"]) for i in mb[0]) for mb in plan for _ in mb[0]]
        computed = sum(width_rows)
        attention_needed = sum(n * (n + 1) / 2 for ex in sequences for n in [len(ex["input_ids"])])
        attention_done = sum(w * (w + 1) / 2 for w in width_rows)
        masked = 1 - attention_needed / attention_done
    else:
        _, computed = batching.computed_tokens(lengths, plan)
        masked = None
    started = (time.perf_counter(), time.process_time())
    try:
        recipe.train()
        wall, cpu = recipe.loop_ended[0] - started[0], recipe.loop_ended[1] - started[1]
        loss = validation_loss(recipe.accelerator.unwrap_model(recipe.model), validation)
    finally:
        recipe.cleanup()
    name = f"recipe ({recipe.batching}{', batchTokens %d' % extra['batchTokens'] if extra.get('batchTokens') else ''})"
    return {"name": name, "useful_tokens": useful, "wall_s": wall, "cpu_s": cpu, "steps": recipe.total_steps,
            "padding_share": 1 - useful / computed, "masked_attention_share": masked, "validation_loss": loss}


def run_trainer(model_dir: Path, work: Path, train: list[dict[str, list[int]]], validation: list[dict[str, list[int]]],
                strategy: str) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, PreTrainedTokenizerFast, Trainer, TrainingArguments

    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(model_dir))
    torch.manual_seed(HYPER["seed"])
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    padder = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=data.IGNORE_INDEX)
    seen = {"useful": 0, "computed": 0}

    def collate(features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = padder(features)
        seen["useful"] += int(batch["attention_mask"].sum())
        seen["computed"] += batch["attention_mask"].numel()
        return batch

    steps = math.ceil(len(train) / HYPER["batchSize"])
    args = TrainingArguments(
        output_dir=str(work / f"hf-{strategy}"), num_train_epochs=HYPER["epochs"], per_device_train_batch_size=HYPER["batchSize"],
        learning_rate=HYPER["learningRate"], warmup_steps=math.ceil(HYPER["warmupRatio"] * steps), lr_scheduler_type="linear",
        max_grad_norm=HYPER["maxGradNorm"], weight_decay=HYPER["weightDecay"], seed=HYPER["seed"], use_cpu=True,
        train_sampling_strategy=strategy, save_strategy="no", eval_strategy="no", logging_strategy="no",
        report_to="none", disable_tqdm=True, dataloader_num_workers=0)
    dataset = [{"input_ids": ex["input_ids"], "labels": [data.IGNORE_INDEX] + ex["labels"][1:],
                "attention_mask": [1] * len(ex["input_ids"])} for ex in train]
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collate)
    started = (time.perf_counter(), time.process_time())
    trainer.train()
    wall, cpu = time.perf_counter() - started[0], time.process_time() - started[1]
    return {"name": f"Trainer ({'padding collator' if strategy == 'random' else strategy})", "useful_tokens": seen["useful"],
            "wall_s": wall, "cpu_s": cpu, "steps": trainer.state.global_step, "padding_share": 1 - seen["useful"] / seen["computed"],
            "masked_attention_share": None, "validation_loss": validation_loss(model, validation)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=600)
    parser.add_argument("--validation", type=int, default=60)
    parser.add_argument("--recipe", nargs="*", default=["auto"], help="recipe batchings to run: auto packed length-grouped shuffled")
    parser.add_argument("--batch-tokens", type=int, default=None, help="training.batchTokens for length-grouped runs")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice, one per core)")
    parser.add_argument("--trainer", nargs="*", default=["random", "group_by_length"], help="Trainer sampling strategies")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="tuneloop-bench-throughput-"))
    model = build_model(work / "model")
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(model))
    rows = copy_rows(args.samples, seed=1)
    train_file = write_jsonl(work / "train.jsonl", rows)
    train = encode(rows, tokenizer)
    validation = encode(copy_rows(args.validation, seed=2), tokenizer)
    lengths = [len(ex["input_ids"]) for ex in train]
    print(f"machine: {torch.get_num_threads()} torch threads; data: {len(train)} samples, {sum(lengths)} tokens, "
          f"lengths {min(lengths)}-{max(lengths)} (median {sorted(lengths)[len(lengths) // 2]})", flush=True)

    results = []
    for name in args.recipe:
        extra = {"batchTokens": args.batch_tokens} if args.batch_tokens and name in ("auto", "length-grouped") else {}
        results.append(run_recipe(model, work, train_file, validation, name, extra))
        print(json.dumps(results[-1]), flush=True)
    for strategy in args.trainer:
        results.append(run_trainer(model, work, train, validation, strategy))
        print(json.dumps(results[-1]), flush=True)

    print(f"\n{'':44} {'tokens/s':>9} {'tok/cpu-s':>9} {'steps':>5} {'padding':>8} {'masked attn':>11} {'val loss':>8}")
    for r in results:
        r["tokens_per_s"], r["tokens_per_cpu_s"] = r["useful_tokens"] / r["wall_s"], r["useful_tokens"] / r["cpu_s"]
        masked = "-" if r["masked_attention_share"] is None else f"{r['masked_attention_share']:.1%}"
        print(f"{r['name']:44} {r['tokens_per_s']:9.0f} {r['tokens_per_cpu_s']:9.0f} {r['steps']:5d} {r['padding_share']:8.1%} "
              f"{masked:>11} {r['validation_loss']:8.4f}")
    trainers = [r for r in results if r["name"].startswith("Trainer")]
    if trainers:
        best = max(trainers, key=lambda r: r["tokens_per_s"])
        for r in results:
            if r["name"].startswith("recipe"):
                print(f"{r['name']}: {r['tokens_per_s'] / best['tokens_per_s']:.2f}x the best Trainer ({best['name']}) by wall time, "
                      f"{r['tokens_per_cpu_s'] / max(t['tokens_per_cpu_s'] for t in trainers):.2f}x by CPU time; "
                      f"validation loss {100 * (r['validation_loss'] / best['validation_loss'] - 1):+.1f}%; "
                      + ", ".join(f"{r['tokens_per_s'] / t['tokens_per_s']:.2f}x {t['name']}" for t in trainers))


if __name__ == "__main__":
    main()
