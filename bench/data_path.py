"""Benchmark 4 of issue 15: the data path with the dataset (and model) in S3.

    PYTHONPATH=operator:trainer:tests/trainer python3 bench/data_path.py [--samples 4000 --steps 40]

Starts moto's S3 server over HTTP (ThreadedMotoServer), uploads an SFT dataset (copy-task
rows of 16-512 tokens, as bench/train_throughput.py) and the benchmark's 4-layer, 256-wide
Llama, then runs the recipe twice against it with the same node cache dir:

1. cold: read and clean from S3, tokenise, write the node's token cache (token_cache.py);
2. warm: the same job again (a rerun with the same cache dir; the ranks of one pod share it the same way): tokens come from the cache.

For each it prints the time to the first batch (from `Recipe.setup()` to the first batch in
the loop: data, model download and tokenising), and the share of step time the loop spent
waiting for data after the first batch (the prefetch thread in loader.py collates ahead).
Also how long collating a step takes (what the loop would wait without the thread) and the
memory per token of the tokenised split, as flat arrays against the Python lists they replace.
A benchmark that prints; it asserts nothing. Target (issue 15): at most 5% waiting after the
first batch.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
import tracemalloc
from pathlib import Path

import boto3
import torch

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.trainer.config import RuntimeSettings
from tuneloop.trainer.recipe import Recipe
from tuneloop.trainer.token_cache import TokenArrays

from train_throughput import build_model, copy_rows
from trainer_testkit import free_port, upload_dir, upload_jsonl

BUCKET = "tuneloop-bench"


def run(spec: dict, cache: Path, steps: int) -> dict[str, float]:
    settings = dataclasses.replace(RuntimeSettings.from_env(), metrics_port=0, cache_dir=str(cache), progress="never")
    recipe = Recipe(FineTuneJobSpec.from_dict({**spec, "training": {**spec["training"], "maxSteps": steps}}), settings,
                    log=lambda _: None)
    started = time.monotonic()
    try:
        recipe.setup(resume=False)
        setup_s = time.monotonic() - started
        loop_started = time.monotonic()
        recipe.train()
        loop_s = time.monotonic() - loop_started
        after_first = loop_s - (recipe.first_batch_at - loop_started)
        steady_wait = recipe.data_wait_seconds - recipe.first_batch_wait
        items = recipe.train_items
        plan = recipe.epoch_plan(0)[:20]
        collate_started = time.perf_counter()
        for micro in plan:
            recipe.collate([items[i] for i in micro[0]])
        collate_s = (time.perf_counter() - collate_started) / len(plan)
    finally:
        recipe.cleanup()
    return {"setup_s": setup_s, "first_batch_s": recipe.first_batch_at - started, "steps": recipe.state.step,
            "step_s": recipe.state.train_seconds / recipe.state.step, "wait_share": steady_wait / after_first,
            "collate_s": collate_s, "tokens": int(recipe.examples["train"].offsets[-1]),
            "lengths": recipe.examples["train"].lengths()}


def bytes_per_token(lengths: list[int], vocab: int = 32_000) -> tuple[float, float]:
    """Bytes per token of a split as Python lists of dicts (what every rank held before) and as flat arrays.

    Token ids drawn from a 32k vocabulary: the test vocabulary's ids are all below 256, ints
    Python shares, which would flatter the lists.
    """
    import random

    rng = random.Random(0)
    tracemalloc.start()
    examples = [{"input_ids": [rng.randrange(vocab) for _ in range(n)], "labels": [rng.randrange(vocab) for _ in range(n)]}
                for n in lengths]
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return held / sum(lengths), TokenArrays.from_examples(examples).nbytes / sum(lengths)


def main() -> None:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per S3 request

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="tuneloop-bench-data-"))
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"})
    try:
        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        rows = copy_rows(args.samples, seed=3)
        import trainer_testkit

        trainer_testkit.BUCKET = BUCKET  # upload helpers write to the benchmark's bucket
        train = upload_jsonl(client, "data/train.jsonl", rows)
        model_dir = build_model(work / "model")
        model = upload_dir(client, model_dir, "models/llama-4x256")
        size = client.head_object(Bucket=BUCKET, Key="data/train.jsonl")["ContentLength"]
        print(f"S3: moto over HTTP on 127.0.0.1:{port}; dataset {args.samples} rows, {size / 1e6:.1f} MB JSONL; "
              f"{torch.get_num_threads()} torch threads", flush=True)
        spec = {"task": "causal-lm-sft", "model": {"source": model},
                "dataset": {"train": train, "split": {"validation": 0, "test": 0}, "cleaning": {"dedupe": False}},
                "output": {"uri": f"s3://{BUCKET}/runs/data-path"},
                "training": {"batchSize": 8, "maxSeqLength": 512, "learningRate": 1e-3, "precision": "fp32", "seed": 7}}
        cache = work / "node-cache"
        for name in ("cold (tokenise, write the node cache)", "warm (tokens from the node cache)"):
            r = run(spec, cache, args.steps)
            print(f"{name}: first batch after {r['first_batch_s']:.1f}s (setup {r['setup_s']:.1f}s); {r['steps']} steps of "
                  f"{r['step_s'] * 1e3:.0f} ms; waiting for data after the first batch: {r['wait_share']:.2%} of the loop; "
                  f"collating one step takes {r['collate_s'] * 1e3:.1f} ms ({r['collate_s'] / r['step_s']:.1%} of a step, "
                  f"now off the loop)", flush=True)
        lists, arrays = bytes_per_token(r["lengths"][:2000])
        print(f"memory per training token (ids of a 32k vocabulary): {lists:.0f} B as Python lists of dicts, "
              f"{arrays:.1f} B as flat arrays")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
