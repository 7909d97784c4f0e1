"""Data-parallel arithmetic the recipe must get right on many processes (issue 8, items 1 and 2).

Kept apart from the recipe so the rule is stated once, next to why it holds:

* **Loss normalisation.** An optimizer step's loss is the sum of token losses over *every*
  rank's micro-batches divided by the step's *global* target count. Each rank only sees its
  own count, and DDP averages gradients (divides by the world size), so each rank scales its
  summed loss by `world_size / global_count`: the averaged gradient is then exactly the
  single-process gradient over the union of the micro-batches. Dividing by the rank's own
  count instead weights a token on a rank with few targets more than one on a busy rank.
  This is what HF Trainer's `average_tokens_across_devices` and torchtune's
  `scale_grads(model, world_size / num_tokens)` do.
* **The LR scheduler is never passed to `accelerator.prepare`.** accelerate's
  `AcceleratedScheduler.step()` steps the wrapped scheduler `num_processes` times per call
  (with `split_batches=False`), which made the schedule run `world_size` times too fast. The
  recipe steps its own scheduler once per optimizer step, skipping the steps the fp16 grad
  scaler skipped, as HF Trainer does.
* **Collectives wait long enough for rank 0's I/O.** Other ranks wait in a barrier while rank 0
  exports final/ and uploads it (and, at a checkpoint, while it waits for the previous upload).
  torch's NCCL default timeout (10 minutes) would kill an 8B export; the recipe sets the
  process group's timeout from `TUNELOOP_COLLECTIVE_TIMEOUT` (review item 16).
"""

from __future__ import annotations

from typing import Any

import torch


def process_group_timeout(seconds: int) -> Any:
    """accelerate's handler that starts the process group with a `seconds` collective timeout."""
    from datetime import timedelta

    from accelerate.utils import InitProcessGroupKwargs

    return InitProcessGroupKwargs(timeout=timedelta(seconds=seconds))


def global_sum(accelerator: Any, value: float) -> float:
    """`value` summed over every process (one small all-reduce; the value itself with one process)."""
    if accelerator.num_processes == 1:
        return float(value)
    total = torch.tensor([float(value)], dtype=torch.float64, device=accelerator.device)
    return float(accelerator.reduce(total, "sum").item())


def global_max(accelerator: Any, value: float) -> float:
    """The largest `value` over every process."""
    if accelerator.num_processes == 1:
        return float(value)
    total = torch.tensor([float(value)], dtype=torch.float64, device=accelerator.device)
    torch.distributed.all_reduce(total, op=torch.distributed.ReduceOp.MAX)
    return float(total.item())


def loss_scale(world_size: int, global_count: float) -> float:
    """Factor for a rank's summed loss so that DDP's gradient average is the global token mean."""
    return world_size / max(global_count, 1.0)


def step_scheduler(accelerator: Any, scheduler: Any) -> None:
    """Advance the (unprepared) scheduler by one optimizer step, unless the grad scaler skipped it."""
    if not accelerator.optimizer_step_was_skipped:
        scheduler.step()


def leave_process_group(finished: bool) -> None:
    """Leave the process group before the interpreter exits, every rank at once when `finished`.

    A rank that exits with its gloo process group still alive can abort in teardown
    ("terminate called without an active exception", SIGABRT) while a peer is closing the
    connections, and torchrun then reports the whole run failed though every rank's work was
    done. The barrier makes every rank finish its collectives first; after a failure there is
    no barrier, since a failed rank never reaches it.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if finished:
        dist.barrier()
    dist.destroy_process_group()
