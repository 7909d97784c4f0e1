"""How long a checkpoint blocks the training loop (issue 15, benchmark 3).

    PYTHONPATH=operator:trainer:tests/trainer python3 bench/checkpoint_stall.py [--hidden 512 --layers 8 --saves 3]

Builds a random-weight Llama from a config (no download), trains it with the real `Recipe`,
and saves the same checkpoint (weights, AdamW state, scheduler, RNG) to the same S3 server
(moto's S3 server over HTTP, in its own process) two ways:

* **async** (what the recipe does): `Recipe.save_checkpoint` copies the state to CPU memory on
  the loop and writes + uploads it in a background thread. The stall is the time the call
  blocks. Between saves the loop trains, and the bench waits (untimed) for the upload to end,
  as a run whose `saveEverySteps` interval is longer than one write + upload would.
* **sync**: the same files written locally (`checkpoint.write_local`) and uploaded
  (`CheckpointPublisher.publish(background=False)`) on the loop, as before this change.

Prints per-checkpoint seconds for both, their ratio (target: the stall at most a tenth of the
synchronous time), the snapshot's size and the peak rise of the process's resident memory
during an async save. A benchmark that prints; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import torch

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.trainer import data
from tuneloop.trainer.checkpoint import capture_rng, write_local
from tuneloop.trainer.config import RuntimeSettings
from tuneloop.trainer.recipe import Recipe

from trainer_testkit import BUCKET, VOCAB, build_tokenizer, free_port, sft_rows, write_jsonl


class PeakRss:
    """Samples the process's resident set every 2 ms while active; `.peak` is the highest seen."""

    def __init__(self) -> None:
        self.process, self.peak, self._stop = psutil.Process(), 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.002)

    def __enter__(self) -> "PeakRss":
        self.peak = self.process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def wait_for_port(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def build_llama(path: Path, hidden: int, layers: int) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(VOCAB), hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                         num_attention_heads=max(2, hidden // 64), num_key_value_heads=max(2, hidden // 64),
                         max_position_embeddings=512, pad_token_id=0, bos_token_id=VOCAB.index("<s>"),
                         eos_token_id=VOCAB.index("</s>"))
    LlamaForCausalLM(config).save_pretrained(str(path))
    build_tokenizer("llama").save_pretrained(str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--saves", type=int, default=3)
    args = parser.parse_args()

    import boto3

    # moto's server in its own process, so this process's memory and GIL measure the trainer only.
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1")
    boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1").create_bucket(Bucket=BUCKET)
    work = Path(tempfile.mkdtemp(prefix="tuneloop-ckpt-bench-"))
    model = build_llama(work / "model", args.hidden, args.layers)
    train = write_jsonl(work / "train.jsonl", sft_rows(200, seed=0))
    spec = FineTuneJobSpec.from_dict({
        "task": "causal-lm-sft", "model": {"source": str(model)},
        "dataset": {"train": str(train), "split": {"validation": 0, "test": 0}},
        "output": {"uri": f"s3://{BUCKET}/bench/checkpoint-stall", "keepLast": 2},
        "training": {"maxSteps": 1000, "batchSize": 4, "maxSeqLength": 128, "learningRate": 1e-4, "packing": False}})
    recipe = Recipe(spec, RuntimeSettings(metrics_port=0, cache_dir=str(work / "cache")), log=lambda _: None)
    recipe.setup(resume=False)
    try:
        batches = data.epoch_batches(len(recipe.train_items), 4, 1, 0, 0)

        def train_steps(n: int) -> None:
            for _ in range(n):
                batch = batches[recipe.state.step % len(batches)]
                recipe.train_step([[recipe.train_items[i] for i in batch[0]]])
                recipe.state.step += 1

        train_steps(1)  # optimizer moments exist from here on
        params = sum(p.numel() for p in recipe.model.parameters() if p.requires_grad)

        stalls, background, rss_rise = [], [], []
        for _ in range(args.saves):
            train_steps(1)
            with PeakRss() as rss:
                before = rss.process.memory_info().rss
                recipe.save_checkpoint({})
                stalls.append(recipe.checkpoint_stalls[-1])
                started = time.monotonic()
                train_steps(1)  # the loop trains on while the checkpoint is written and uploaded
                recipe.publisher.wait()
                background.append(time.monotonic() - started)
            rss_rise.append(rss.peak - before)

        sync = []
        for _ in range(args.saves):
            train_steps(1)
            started = time.monotonic()
            local = recipe.staging / f"sync-{recipe.state.step:08d}"
            write_local(local, recipe.model, recipe.optimizer, recipe.scheduler, [capture_rng()], recipe.state, spec.to_dict())
            recipe.publisher.publish(local, recipe.state.step, {}, background=False)
            sync.append(time.monotonic() - started)

        checkpoints = recipe.publisher.complete_checkpoints()
        size = sum(max(checkpoints.items())[1]["files"].values())
        stall, sync_s = statistics.median(stalls), statistics.median(sync)
        print(json.dumps({
            "machine": f"{os.cpu_count()} CPUs, torch {torch.__version__}, moto S3 server (own process) over HTTP on 127.0.0.1",
            "model": {"hidden": args.hidden, "layers": args.layers, "trainable_parameters": params},
            "checkpoint_bytes": size,
            "saves": args.saves,
            "sync_seconds": [round(s, 3) for s in sync],
            "async_stall_seconds": [round(s, 4) for s in stalls],
            "async_background_seconds": [round(s, 3) for s in background],
            "median_sync_seconds": round(sync_s, 3),
            "median_stall_seconds": round(stall, 4),
            "stall_over_sync": round(stall / sync_s, 4),
            "target_met": stall <= sync_s / 10,
            "snapshot_bytes": recipe.last_snapshot_bytes,
            "peak_rss_rise_bytes": max(rss_rise),
        }, indent=1))
    finally:
        recipe.cleanup()
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
