"""Sharded training with FSDP2 (`training.sharding: fsdp`, issue 8 "Scale").

A full fine-tune under DDP keeps a whole replica per process: fp32 master weights and AdamW
moments are 16 bytes per parameter, 128 GB for an 8B model, more than one 80 GB GPU holds.
FSDP2 (`torch.distributed.fsdp.fully_shard`) splits parameters, gradients and optimizer
state across the processes and gathers one transformer block at a time.

We call torch's FSDP2 directly rather than through accelerate's FSDP plugin: accelerate 1.15
ignores the plugin on CPU and falls back to DDP, so the CPU tests (gloo, world 2) would not
exercise sharding at all. The rest of the recipe is unchanged: accelerate still owns the
process group, the reductions and the device; only the model bypasses `prepare()`.

What this module is for:

* `shard_model`: `fully_shard` on every block the model names as unsplittable
  (transformers' `_no_split_modules`: `LlamaDecoderLayer`, `BertLayer`, ...), then on the root.
  Mixed precision is FSDP2's `MixedPrecisionPolicy` (parameters gathered in bf16, gradients
  reduced in fp32; fp32 master weights stay sharded); on CPU everything is fp32.
* `gradient_sync`: skip the reduce-scatter on all but the last micro-batch of a step (DDP's
  `no_sync`).
* Shard-aware checkpoints with `torch.distributed.checkpoint` (DCP): each rank writes its own
  shards (`__<rank>_0.distcp`), rank 0 the `.metadata`; loading reshards as needed.
* `full_model_state`: the consolidated weights (gathered to rank 0, on CPU) for the Hugging
  Face export in final/.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

import torch

def ensure_process_group() -> bool:
    """A one-process group when none was launched: FSDP2 and DCP need one even on a single GPU.

    The operator starts torchrun only for more than one process (cli.py), so a one-GPU
    `sharding: fsdp` job arrives here without `RANK`/`WORLD_SIZE`; its checkpoints are then
    the same DCP layout as a many-GPU run's, and resumable by one. True when it made one.
    """
    import torch.distributed as dist

    if dist.is_initialized() or "WORLD_SIZE" in os.environ:
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(0)
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    return True


def release_process_group() -> None:
    """Undo `ensure_process_group` (and accelerate's cached view of it), for a next run in this process."""
    import torch.distributed as dist
    from accelerate.state import AcceleratorState, PartialState

    if dist.is_initialized():
        dist.destroy_process_group()
    AcceleratorState._reset_state(reset_partial_state=True)
    PartialState._reset_state()


def shard_model(model: torch.nn.Module, compute_precision: str) -> torch.nn.Module:
    """Shard `model` in place with FSDP2 over the default process group; returns it."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy()  # fp32 everywhere (CPU, or precision: fp32)
    if compute_precision == "bf16":
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    blocks = set(getattr(model, "_no_split_modules", None) or [])
    for module in model.modules():
        if type(module).__name__ in blocks:
            fully_shard(module, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


def is_sharded(model: Any) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


@contextlib.contextmanager
def gradient_sync(model: Any, enabled: bool) -> Iterator[None]:
    """Reduce-scatter gradients in this backward only if `enabled` (the last micro-batch of a step)."""
    model.set_requires_gradient_sync(enabled)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def save_sharded(directory: Path, model: Any, optimizer: Any) -> None:
    """Every rank writes its shards of the model and optimizer into its own `directory` (a collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    directory.mkdir(parents=True, exist_ok=True)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(directory))


def load_sharded(directory: Path, model: Any, optimizer: Any | None) -> None:
    """Load a DCP checkpoint (all ranks' files in `directory`) into the sharded model (and optimizer)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_model_state_dict, set_state_dict

    model_state, optim_state = get_state_dict(model, optimizer if optimizer is not None else [])
    if optimizer is None:
        state = {"model": model_state}
        dcp.load(state, checkpoint_id=str(directory))
        set_model_state_dict(model, state["model"])
        return
    state = {"model": model_state, "optim": optim_state}
    dcp.load(state, checkpoint_id=str(directory))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


def files_to_read(directory: Path, model: Any, optimizer: Any) -> set[str]:
    """The data files this rank's shards are read from, by DCP's own load planner over `.metadata`.

    Each rank downloads only these instead of the whole checkpoint once per rank. Not only its
    own `__<rank>_0.distcp`: DCP stores a replicated item (an optimizer step counter) once, in
    whichever rank's file its save planner chose.
    """
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
    from torch.distributed.checkpoint.state_dict import get_state_dict

    metadata = FileSystemReader(str(directory)).read_metadata()
    model_state, optim_state = get_state_dict(model, optimizer)
    planner = DefaultLoadPlanner()
    planner.set_up_planner({"model": model_state, "optim": optim_state}, metadata, is_coordinator=False)
    return {metadata.storage_data[item.storage_index].relative_path for item in planner.create_local_plan().items}


def full_model_state(model: Any) -> dict[str, torch.Tensor]:
    """The whole model's weights on rank 0's CPU (empty on other ranks); every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
