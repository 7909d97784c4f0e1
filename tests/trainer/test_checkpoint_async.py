"""Checkpoints do not stall training (issue 15 item 3): snapshot on the loop, write and upload behind it.

The stall itself is measured by bench/checkpoint_stall.py (a benchmark, never a timed test);
these tests pin the properties that make the background save safe.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.trainer import data
from tuneloop.trainer.checkpoint import TrainerState, take_snapshot
from tuneloop.trainer.config import RuntimeSettings
from tuneloop.trainer.recipe import Recipe
from tuneloop.trainer.storage import LocalStorage

from trainer_testkit import sft_rows, spec_for, write_jsonl

# Which thread opened which file, while a test records (audit hooks cannot be removed: one, switched on and off).
_OPENED: list[tuple[str, str]] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _OPENED is not None and event == "open" and isinstance(args[0], (str, Path)) and "w" in str(args[1] or ""):
        _OPENED.append((threading.current_thread().name, str(args[0])))


sys.addaudithook(_audit)


class GatedStorage(LocalStorage):
    """A local output folder whose uploads wait for `gate`: the upload is still in flight while the test trains on."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.gate = threading.Event()

    def upload_file(self, local: Path, key: str) -> None:
        assert self.gate.wait(60), "the test never opened the gate"
        super().upload_file(local, key)


def test_snapshot_is_a_copy_not_a_view_of_the_live_tensors() -> None:
    layer = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1)
    layer(torch.ones(2, 4)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    snapshot = take_snapshot(layer, optimizer, scheduler, [], TrainerState(step=1), {})
    weight, moment = snapshot.tensors["weight"].clone(), snapshot.optimizer["state"][0]["exp_avg"].clone()
    optimizer.step()  # the loop goes on: in-place updates of weights and moments
    assert not torch.equal(layer.weight.detach(), weight)
    assert torch.equal(snapshot.tensors["weight"], weight)
    assert torch.equal(snapshot.optimizer["state"][0]["exp_avg"], moment)
    assert snapshot.nbytes == 3 * (12 + 3) * 4 + 2 * 4  # weights, exp_avg, exp_avg_sq (fp32), a step counter per param


def test_checkpoint_is_written_off_the_loop_and_holds_the_weights_of_its_step(tiny_llama: Path, tmp_path: Path) -> None:
    global _OPENED
    train = write_jsonl(tmp_path / "train.jsonl", sft_rows(40, seed=3))
    spec = spec_for("causal-lm-sft", str(tiny_llama), str(train), str(tmp_path / "out"), maxSteps=4, batchSize=4,
                    learningRate=1e-2)
    recipe = Recipe(FineTuneJobSpec.from_dict(spec), RuntimeSettings(metrics_port=0, cache_dir=str(tmp_path / "cache")),
                    log=lambda _: None)
    recipe.setup(resume=False)
    storage = GatedStorage(tmp_path / "out")
    recipe.output = recipe.publisher.storage = storage
    try:
        model = recipe.accelerator.unwrap_model(recipe.model)
        batches = data.epoch_batches(len(recipe.train_items), 4, 1, recipe.spec.training.seed, 0)
        recipe.train_step([[recipe.train_items[i] for i in batches[0][0]]])
        recipe.state.step = 1
        saved = {n: p.detach().clone() for n, p in model.named_parameters()}
        _OPENED = []
        recipe.save_checkpoint({})
        assert recipe.publisher.in_flight  # the loop is back while the upload waits
        recipe.train_step([[recipe.train_items[i] for i in batches[1][0]]])  # weights change in place meanwhile
        assert any(not torch.equal(p.detach(), saved[n]) for n, p in model.named_parameters())
        storage.gate.set()
        recipe.publisher.wait()
        writers = {thread for thread, path in _OPENED if "step-00000001" in path}
        assert writers == {"checkpoint-step-1"}, writers  # not MainThread: the loop wrote nothing
        published = load_file(str(tmp_path / "out" / "checkpoints" / "step-00000001" / "model.safetensors"))
        assert published.keys() == saved.keys()
        assert all(torch.equal(published[n], saved[n]) for n in saved)
        assert sorted(recipe.publisher.complete_checkpoints()) == [1]
    finally:
        _OPENED = None
        storage.gate.set()
        recipe.cleanup()
