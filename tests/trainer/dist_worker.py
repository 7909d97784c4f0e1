"""One torchrun worker for the data-parallel tests (test_distributed.py): the real Recipe at world 2.

    torchrun --nproc_per_node 2 dist_worker.py OUT.json MODEL_DIR DATA_DIR

Runs two scenarios in one launch (imports and process-group start-up dominate the cost):

* `gradient`: one optimizer step's gradient, accumulated by the recipe on each rank, next to
  a single-process reference over the union of every rank's micro-batches (issue 8 item 2).
* `schedule`: a 16-step run whose validation split has one row (fewer rows than processes,
  item 7), recording the learning rate after every optimizer step (item 1).

Rank 0 writes what it saw to OUT.json; the test makes the assertions.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import torch

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.trainer import data
from tuneloop.trainer.config import RuntimeSettings
from tuneloop.trainer.recipe import Recipe


def spec(model: Path, data_dir: Path, out: Path, **training: Any) -> FineTuneJobSpec:
    return FineTuneJobSpec.from_dict({
        "task": "causal-lm-sft",
        "model": {"source": str(model)},
        "dataset": {"train": str(data_dir / "train.jsonl"), "split": {"validation": 0.0, "test": 0.0},
                    **({"validation": str(data_dir / "validation.jsonl")} if (data_dir / "validation.jsonl").exists() else {})},
        "output": {"uri": str(out)},
        "training": {"learningRate": 1e-3, "seed": 3, "maxSeqLength": 64, **training},
    })


def gradient(model: Path, data_dir: Path, out: Path) -> dict[str, Any]:
    recipe = Recipe(spec(model, data_dir, out / "gradient", batchSize=2, gradientAccumulationSteps=2, maxSteps=1,
                         packing=False), RuntimeSettings(metrics_port=0), log=lambda _: None)
    recipe.setup(resume=False)
    training = recipe.spec.training
    batches = recipe.epoch_plan(0)  # the recipe's own (length-grouped) micro-batches
    assert recipe.batching == "length-grouped"
    group = batches[:training.gradient_accumulation_steps]
    per_rank = [[[recipe.train_items[i] for i in batch[r]] for batch in group] for r in range(recipe.world)]

    unwrapped = recipe.accelerator.unwrap_model(recipe.model)
    reference = copy.deepcopy(unwrapped)
    total, count = 0.0, sum(data.count_loss_tokens(mb) for rank in per_rank for mb in rank)
    for micro in (mb for rank in per_rank for mb in rank):
        batch = recipe.collate(micro)
        logits = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits.float()
        total = total + recipe.loss_sum(logits, batch)
    (total / count).backward()

    recipe.accumulate_gradients(per_rank[recipe.rank])
    got = torch.cat([p.grad.flatten() for p in unwrapped.parameters() if p.requires_grad])
    want = torch.cat([p.grad.flatten() for p in reference.parameters() if p.requires_grad])
    recipe.cleanup()
    return {"relative_error": float((got - want).norm() / want.norm()),
            "targets_per_rank": [sum(data.count_loss_tokens(mb) for mb in rank) for rank in per_rank]}


class TracingRecipe(Recipe):
    def report_step(self, *args: Any, **kwargs: Any) -> None:
        super().report_step(*args, **kwargs)
        self.lr_trace.append(self.scheduler.get_last_lr()[0])


def schedule(model: Path, data_dir: Path, out: Path) -> dict[str, Any]:
    recipe = TracingRecipe(spec(model, data_dir, out / "schedule", batchSize=2, maxSteps=16, warmupRatio=0.25,
                                scheduler="linear", evalEverySteps=4), RuntimeSettings(metrics_port=0), log=lambda _: None)
    recipe.lr_trace = []
    recipe.setup(resume=False)
    try:
        results = recipe.train()
    finally:
        recipe.cleanup()
    group = torch.distributed.distributed_c10d._get_default_group()
    return {"lr": recipe.lr_trace, "total_steps": recipe.total_steps, "validation_rows": len(recipe.examples["validation"]),
            "history": results["history"], "world": recipe.world,
            "collective_timeout": group._get_backend(torch.device("cpu")).options._timeout.total_seconds()}


def main() -> None:
    out, model, data_dir = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    found = {"gradient": gradient(model, data_dir, out.parent), "schedule": schedule(model, data_dir, out.parent)}
    if torch.distributed.get_rank() == 0:
        out.write_text(json.dumps(found))


if __name__ == "__main__":
    main()
