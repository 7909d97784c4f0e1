"""The SFT loss does not copy the logits (review item 13: `logits[:, :-1].reshape` was a full copy at batch > 1)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.trainer import data
from tuneloop.trainer.config import RuntimeSettings
from tuneloop.trainer.recipe import Recipe

from trainer_testkit import spec_for


def test_sft_loss_allocates_one_logits_sized_buffer_not_two(tmp_path: Path) -> None:
    recipe = Recipe(FineTuneJobSpec.from_dict(spec_for("causal-lm-sft", "s3://b/m", "s3://b/d", str(tmp_path))),
                    RuntimeSettings(metrics_port=0))
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 64, 1000, generator=generator)
    labels = torch.randint(0, 1000, (4, 64), generator=generator)
    labels[:, :10] = data.IGNORE_INDEX  # the prompt
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        loss = recipe.loss_sum(logits, {"labels": labels})
    allocated = sum(max(k.self_cpu_memory_usage, 0) for k in prof.key_averages())
    assert allocated < 1.5 * logits.numel() * logits.element_size()  # log-softmax's output only
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 1000), labels[:, 1:].reshape(-1), reduction="sum")
    assert torch.allclose(loss, expected, rtol=1e-5)
