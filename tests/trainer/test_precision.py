"""fp32 master weights whatever the checkpoint's storage dtype (issue 8 items 3 and 10).

The tiny models here are saved in bf16, as today's Hub checkpoints are: a model saved in
fp32 (as the other tests' are) cannot show a weight-dtype bug.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.trainer import data
from tuneloop.trainer.config import RuntimeSettings
from tuneloop.trainer.precision import load_dtype, upcast_trainable
from tuneloop.trainer.recipe import Recipe

from trainer_testkit import build_tiny_model, classification_rows, sft_rows, spec_for, write_jsonl


@pytest.fixture(scope="module")
def bf16_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model("llama", tmp_path_factory.mktemp("bf16-llama"), dtype=torch.bfloat16)


@pytest.fixture(scope="module")
def bf16_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model("bert", tmp_path_factory.mktemp("bf16-bert"), dtype=torch.bfloat16)


def recipe_for(spec: dict[str, Any], tmp_path: Path) -> Recipe:
    recipe = Recipe(FineTuneJobSpec.from_dict(spec), RuntimeSettings(metrics_port=0, cache_dir=str(tmp_path / "cache")),
                    log=lambda _: None)
    recipe.setup(resume=False)
    return recipe


def test_full_fine_tune_of_a_bf16_checkpoint_keeps_fp32_weights_and_moments(bf16_llama: Path, tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", sft_rows(40, seed=1))
    spec = spec_for("causal-lm-sft", str(bf16_llama), str(train), str(tmp_path / "out"), learningRate=2e-5,
                    precision="fp32", maxSteps=1, batchSize=4)
    recipe = recipe_for(spec, tmp_path)
    try:
        model = recipe.accelerator.unwrap_model(recipe.model)
        assert {p.dtype for p in model.parameters()} == {torch.float32}
        weight = model.model.layers[0].mlp.down_proj.weight
        before = weight.detach().clone()
        batches = data.epoch_batches(len(recipe.train_items), 4, 1, 1, 0)
        recipe.train_step([[recipe.train_items[i] for i in batches[0][0]]])
        # One AdamW step at the spec's default learning rate moves every weight that got a
        # gradient; in bf16 storage about 70% of such updates round away.
        assert (weight.detach() != before).float().mean().item() == 1.0
        moments = {s["exp_avg"].dtype for s in recipe.optimizer.state_dict()["state"].values()}
        assert moments == {torch.float32}
    finally:
        recipe.cleanup()


def test_lora_head_of_a_bf16_checkpoint_trains_in_fp32(bf16_bert: Path, tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", classification_rows(40, seed=1))
    spec = spec_for("sequence-classification", str(bf16_bert), str(train), str(tmp_path / "out"), method="lora", maxSteps=1)
    recipe = recipe_for(spec, tmp_path)
    try:
        model = recipe.accelerator.unwrap_model(recipe.model)
        trainable = {n: p.dtype for n, p in model.named_parameters() if p.requires_grad}
        assert any("classifier" in n for n in trainable)  # the fresh head, in modules_to_save
        assert set(trainable.values()) == {torch.float32}
    finally:
        recipe.cleanup()


@pytest.mark.parametrize("mixed, trainable, dtype", [
    ("bf16", True, torch.float32),    # full fine-tune under bf16 autocast: fp32 master weights
    ("fp16", True, torch.float32),    # fp16 GradScaler cannot unscale fp16 gradients
    ("no", True, torch.float32),      # precision: fp32 means fp32 weights, not the checkpoint's dtype
    ("bf16", False, torch.bfloat16),  # a frozen LoRA base: compute dtype, half the memory
    ("fp16", False, torch.float16),
    ("no", False, torch.float32),
])
def test_load_dtype(mixed: str, trainable: bool, dtype: torch.dtype) -> None:
    assert load_dtype(mixed, trainable=trainable) is dtype


def test_fp16_grad_scaler_unscales_fp32_trainable_weights_of_an_fp16_model() -> None:
    """What accelerate's fp16 path does at clip_grad_norm_; it raised on fp16-stored weights (item 10)."""
    layer = torch.nn.Linear(4, 4).to(torch.float16)
    layer.bias.requires_grad_(False)
    upcast_trainable(layer)
    assert layer.weight.dtype is torch.float32 and layer.bias.dtype is torch.float16
    optimizer = torch.optim.AdamW([layer.weight])
    scaler = torch.amp.GradScaler("cpu")
    with torch.autocast("cpu", dtype=torch.float16):  # as accelerate's fp16 mixed precision
        loss = layer(torch.ones(2, 4)).float().sum()
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)  # raises "Attempting to unscale FP16 gradients." on an fp16 weight
    scaler.step(optimizer)
    scaler.update()


def test_checkpoint_carries_the_fp16_grad_scaler(tmp_path: Path) -> None:
    """An fp16 resume restarts from the saved loss scale, not from 2**16 (item 10)."""
    from tuneloop.trainer.checkpoint import TrainerState, read_local, write_local

    def parts() -> tuple[Any, Any, Any, Any]:
        layer = torch.nn.Linear(2, 2)
        optimizer = torch.optim.AdamW(layer.parameters())
        return layer, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0), torch.amp.GradScaler("cpu")

    layer, optimizer, scheduler, scaler = parts()
    scaler.scale(torch.ones(1))
    scaler.update(new_scale=1234.0)
    write_local(tmp_path / "ckpt", layer, optimizer, scheduler, [], TrainerState(step=3), {}, scaler=scaler)
    layer, optimizer, scheduler, fresh = parts()
    fresh.scale(torch.ones(1))  # initialises the scale tensor, as the first backward does
    read_local(tmp_path / "ckpt", layer, optimizer, scheduler, scaler=fresh)
    assert fresh.get_scale() == 1234.0
