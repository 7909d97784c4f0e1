"""GPU checks and a throughput benchmark for the trainer (issue 8): what CPU tests cannot show.

    PYTHONPATH=operator:trainer:tests/trainer python3 bench/trainer_gpu.py [--hidden 1536 --layers 14 --steps 20] [--sharding fsdp]

Prints, for the GPU it finds (all on random-weight Llama models built from a config, no
download):

1. bf16/fp16 runs keep fp32 master weights (precision.py), and a model *stored* in fp16
   trains under `precision: fp16` without "Attempting to unscale FP16 gradients" (item 10).
2. The packing guard's verdict for sdpa, and for flash_attention_2 (batched rows, then the
   flattened one-row layout the recipe uses) when flash-attn is installed (items 5, Scale).
3. Tokens/s and MFU (throughput.py) of a short SFT run of a mid-size model (the recipe's
   batching for each attention kernel), with `training.sharding` as given (`--sharding fsdp`:
   FSDP2 with bf16 parameters gathered and fp32 reductions, DCP checkpoint every 10 steps),
   then the same model, data, batch size and steps through `transformers.Trainer` (padding
   collator, group_by_length, bf16), timed around the whole run (its first steps included, as
   for the recipe).
4. With `--sharding fsdp`: the sharded run's checkpoint files, the consolidated final/ loading
   with `from_pretrained`, and the dtype of the sharded master weights (fp32).

A benchmark that prints; it asserts nothing. Without a GPU it runs a CPU smoke of the same
steps at toy sizes (no MFU: no tensor-core peak to compare with).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.trainer import data, throughput
from tuneloop.trainer.config import RuntimeSettings
from tuneloop.trainer.packing_guard import packing_isolates
from tuneloop.trainer.recipe import Recipe

from trainer_testkit import VOCAB, build_tokenizer, sft_rows, write_jsonl


def build_llama(path: Path, hidden: int, layers: int, dtype: torch.dtype) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    heads = max(2, hidden // 64)
    config = LlamaConfig(vocab_size=len(VOCAB), hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=4096, pad_token_id=0,
                         bos_token_id=VOCAB.index("<s>"), eos_token_id=VOCAB.index("</s>"))
    LlamaForCausalLM(config).to(dtype).save_pretrained(str(path))
    build_tokenizer("llama").save_pretrained(str(path))
    return path


def run(model: Path, work: Path, steps: int, **training: object) -> Recipe:
    train = write_jsonl(work / "train.jsonl", sft_rows(4000, seed=0))
    spec = FineTuneJobSpec.from_dict({
        "task": "causal-lm-sft", "model": {"source": str(model)}, "dataset": {"train": str(train), "split": {"validation": 0, "test": 0},
                                                                             "cleaning": {"dedupe": False}},
        "output": {"uri": str(work / "out"), "saveEverySteps": 10},
        "training": {"maxSteps": steps, "batchSize": 8, "maxSeqLength": 512, "learningRate": 1e-4, **training}})
    recipe = Recipe(spec, RuntimeSettings(metrics_port=0, cache_dir=str(work / "cache")), log=print)
    recipe.setup(resume=False)
    return recipe


def fsdp_facts(recipe: Recipe, out: Path) -> dict[str, object]:
    """What the sharded run left behind: DCP files per checkpoint, final/ loadable, fp32 master shards."""
    from transformers import AutoModelForCausalLM

    facts: dict[str, object] = {
        "master_weight_dtypes": sorted({str(p.to_local().dtype) for p in recipe.model.parameters()}),
        "checkpoints": {p.parent.name: sorted(json.loads(p.read_text())["files"]) for p in (out / "checkpoints").glob("*/manifest.json")},
    }
    if recipe.is_main:
        try:
            loaded = AutoModelForCausalLM.from_pretrained(str(out / "final"))
            facts["final_loads"] = f"{sum(p.numel() for p in loaded.parameters())} parameters"
        except Exception as e:  # noqa: BLE001 - a benchmark reports what happened
            facts["final_loads"] = f"FAILED: {type(e).__name__}: {e}"
    return facts


def trainer_throughput(model_dir: Path, work: Path, steps: int, gpu: bool) -> dict[str, object]:
    """The same model, data and batch through transformers.Trainer (padding collator, bf16 on GPU): tokens/s and MFU."""
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, PreTrainedTokenizerFast, Trainer, TrainingArguments

    from tuneloop.api.finetunejob import FieldMap

    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(model_dir))
    rows = sft_rows(4000, seed=0)
    examples = [ex for ex in (data.encode_sft(r, tokenizer, FieldMap(), 512) for r in rows) if ex]
    dataset = [{"input_ids": ex["input_ids"], "attention_mask": [1] * len(ex["input_ids"]), "labels": ex["labels"]} for ex in examples]
    bf16 = gpu and torch.cuda.is_bf16_supported()
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    padder = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=data.IGNORE_INDEX)
    seen = {"tokens": 0, "sequences": 0}

    def collate(features: list[dict[str, object]]) -> dict[str, object]:
        seen["tokens"] += sum(len(f["input_ids"]) for f in features)
        seen["sequences"] += len(features)
        return padder(features)

    args = TrainingArguments(output_dir=str(work / "hf-trainer"), max_steps=steps, per_device_train_batch_size=8, learning_rate=1e-4,
                             bf16=bf16, use_cpu=not gpu, save_strategy="no", eval_strategy="no", logging_strategy="no",
                             report_to="none", disable_tqdm=True, train_sampling_strategy="group_by_length")
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collate)
    if gpu:
        torch.cuda.synchronize()
    started = time.monotonic()
    trainer.train()
    if gpu:
        torch.cuda.synchronize()
    seconds = time.monotonic() - started
    counts = throughput.FlopCounts.of(model)
    peak = throughput.peak_flops(torch.cuda.get_device_name(), "bf16" if bf16 else "no") if gpu else None
    return {"seconds": round(seconds, 1), "tokens_per_second": seen["tokens"] / seconds, "bf16": bf16,
            "mfu": throughput.mfu(counts, seen["tokens"], seen["sequences"], seconds, peak, 1) if peak else None}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=1536)
    parser.add_argument("--layers", type=int, default=14)  # ~0.53B parameters at 1536 wide
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sharding", choices=["none", "fsdp"], default="none")
    args = parser.parse_args()
    gpu = torch.cuda.is_available()
    if not gpu:
        args.hidden, args.layers, args.steps = 64, 2, 3
        print("no GPU: CPU smoke at toy sizes")
    else:
        print(f"device: {torch.cuda.get_device_name()}")
    work = Path(tempfile.mkdtemp(prefix="tuneloop-bench-"))
    found: dict[str, object] = {}

    for precision, stored in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        if precision == "bf16" and gpu and not torch.cuda.is_bf16_supported():
            continue
        model = build_llama(work / f"tiny-{precision}", 64, 2, stored)
        recipe = run(model, work / f"p-{precision}", 3, precision=precision)
        try:
            results = recipe.train()
            dtypes = sorted({str(p.dtype) for p in recipe.accelerator.unwrap_model(recipe.model).parameters()})
            found[f"precision {precision} (stored {stored})"] = {"weights": dtypes, "autocast": recipe.accelerator.mixed_precision,
                                                               "train_loss": results["train_loss"],
                                                               "scaler": recipe.accelerator.scaler is not None}
        except Exception as e:  # noqa: BLE001 - a benchmark reports what happened
            found[f"precision {precision}"] = f"FAILED: {type(e).__name__}: {e}"
        finally:
            recipe.cleanup()

    from transformers import AutoModelForCausalLM

    device = "cuda" if gpu else "cpu"
    guard_model = build_llama(work / "guard", 64, 2, torch.float32)
    for attn in ("sdpa", "eager", "flash_attention_2"):
        try:
            dtype = torch.bfloat16 if attn == "flash_attention_2" else torch.float32
            model = AutoModelForCausalLM.from_pretrained(str(guard_model), attn_implementation=attn, dtype=dtype).to(device)
            found[f"packing guard {attn}"] = {"batched": packing_isolates(model, device), "flattened": packing_isolates(model, device, flatten=True)}
        except Exception as e:  # noqa: BLE001
            found[f"packing guard {attn}"] = f"unavailable: {type(e).__name__}: {str(e).splitlines()[0][:120]}"

    model = build_llama(work / "mid", args.hidden, args.layers, torch.bfloat16)
    for attn in ("sdpa", "flash_attention_2") if gpu else ("sdpa",):
        try:
            recipe = run(model, work / f"speed-{attn}", args.steps, attentionImplementation=attn, sharding=args.sharding,
                         **({"precision": "bf16"} if gpu and args.sharding == "fsdp" else {}))
        except Exception as e:  # noqa: BLE001
            found[f"throughput {attn}"] = f"unavailable: {e}"
            continue
        try:
            started = time.monotonic()
            recipe.train()
            seconds = time.monotonic() - started
            values = {m.name: m.samples for m in recipe.metrics.registry.collect()} if hasattr(recipe.metrics, "registry") else {}
            mfu = next((s[0].value for n, s in values.items() if n.endswith("mfu_ratio") and s), None)
            tps = next((s[0].value for n, s in values.items() if n.endswith("tokens_per_second") and s), None)
            # The whole loop, as Trainer is timed below: the tokens of every micro-batch trained.
            done = [mb[recipe.rank] for epoch in range(recipe.state.epoch + 1) for mb in recipe.epoch_plan(epoch)][:recipe.state.step]
            tokens = sum(recipe.train_lengths[i] for mb in done for i in mb)
            sequences = sum(data.count_sequences([recipe.train_items[i] for i in mb]) for mb in done)
            loop = recipe.state.train_seconds + recipe.data_wait_seconds
            peak = throughput.peak_flops(torch.cuda.get_device_name(), recipe.accelerator.mixed_precision) if gpu else None
            found[f"throughput {attn}"] = {"seconds": round(seconds, 1), "batching": recipe.batching, "tokens_per_second_last_step": tps,
                                           "mfu_last_step": mfu, "tokens_per_second": tokens / loop,
                                           "mfu": throughput.mfu(recipe.flop_counts, tokens, sequences, loop, peak, 1) if peak else None,
                                           "flop_counts": recipe.flop_counts.__dict__, "sharding": args.sharding, "world": recipe.world,
                                           "gpu_memory_peak_bytes": torch.cuda.max_memory_allocated() if gpu else None}
            if args.sharding == "fsdp":
                found[f"fsdp {attn}"] = fsdp_facts(recipe, work / f"speed-{attn}" / "out")
        finally:
            recipe.cleanup()
    try:  # the same model through transformers.Trainer, beside the recipe (issue 15 benchmark 6)
        found["throughput transformers.Trainer (sdpa, group_by_length)"] = trainer_throughput(model, work, args.steps, gpu)
    except Exception as e:  # noqa: BLE001 - a benchmark reports what happened
        found["throughput transformers.Trainer"] = f"FAILED: {type(e).__name__}: {e}"
    print(json.dumps(found, indent=1, default=str))


if __name__ == "__main__":
    main()
