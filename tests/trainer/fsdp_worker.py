"""One torchrun worker for the FSDP2 tests (test_sharding.py): the real Recipe at world 2, gloo on CPU.

    torchrun --nproc_per_node 2 fsdp_worker.py OUT.json MODEL_DIR DATA_DIR WORK_DIR

Runs, in one launch (imports and process-group start-up dominate the cost):

* `ddp`: an 8-step run with `sharding: none`, its per-step train loss;
* `fsdp`: the same run with `sharding: fsdp` (checkpoints every 3 steps, DCP);
* `preempted` + `resumed`: the fsdp run stopped through the SIGTERM path after step 4 (a
  checkpoint is published, Preempted raised), then a fresh Recipe resuming from it to step 8.

Rank 0 writes the traces and where the outputs are to OUT.json; the test asserts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.trainer.config import RuntimeSettings
from tuneloop.trainer.recipe import Preempted, Recipe


class TracingRecipe(Recipe):
    """Records the global train loss of every step; stops (as on SIGTERM) after step `stop_after`.

    The flag is agreed on in the next step's all-reduce, so it is raised one step early.
    """

    stop_after: int | None = None

    def report_step(self, *args: Any, **kwargs: Any) -> None:
        super().report_step(*args, **kwargs)
        self.loss_trace[self.state.step] = self.state.last_train_loss
        if self.stop_after is not None and self.state.step >= self.stop_after - 1:
            self.stop_requested = True


def run(model: Path, data_dir: Path, out: Path, sharding: str, stop_after: int | None = None) -> dict[str, Any]:
    spec = FineTuneJobSpec.from_dict({
        "task": "causal-lm-sft",
        "model": {"source": str(model)},
        "dataset": {"train": str(data_dir / "train.jsonl"), "validation": str(data_dir / "validation.jsonl"),
                    "split": {"validation": 0.0, "test": 0.0}},
        "output": {"uri": str(out), "saveEverySteps": 3, "keepLast": 2},
        "training": {"learningRate": 3e-3, "seed": 3, "maxSeqLength": 64, "batchSize": 2, "gradientAccumulationSteps": 2,
                     "maxSteps": 8, "warmupRatio": 0.25, "evalEverySteps": 4, "sharding": sharding},
    })
    recipe = TracingRecipe(spec, RuntimeSettings(metrics_port=0), log=lambda _: None)
    recipe.loss_trace, recipe.stop_after = {}, stop_after
    recipe.setup()
    preempted = False
    try:
        results = recipe.train()
    except Preempted:
        preempted, results = True, {}
    finally:
        recipe.cleanup()
    return {"loss": recipe.loss_trace, "preempted": preempted, "history": results.get("history"),
            "validation": results.get("validation"), "sharded": recipe.sharded,
            "param_types": sorted({type(p).__name__ for p in recipe.model.parameters()})}


def main() -> None:
    out, model, data_dir, work = (Path(a) for a in sys.argv[1:5])
    found = {
        "ddp": run(model, data_dir, work / "ddp", "none"),
        "fsdp": run(model, data_dir, work / "fsdp", "fsdp"),
        "preempted": run(model, data_dir, work / "resume", "fsdp", stop_after=4),
        "resumed": run(model, data_dir, work / "resume", "fsdp"),
    }
    if torch.distributed.get_rank() == 0:
        out.write_text(json.dumps(found))


if __name__ == "__main__":
    main()
