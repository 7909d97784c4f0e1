"""The recipe's checkpoint steps: save, resume, and restore the best weights.

A mixin of `Recipe` (recipe.py keeps the loop a reader's walk): what goes in a checkpoint and
how it is published, with the manifest-last rule, is checkpoint.py; FSDP's sharded state is
sharding.py. Here is when and from where the recipe calls them:

- save: snapshot the state to CPU memory on the loop, write and upload in the background,
  at most one checkpoint in flight (issue 15 benchmark 3); under FSDP every rank writes and
  uploads its own shards and rank 0 writes the manifest once all succeeded;
- resume: the newest complete checkpoint, exactly (same batches and RNG at the same world
  size); a checkpoint saved with the other sharding setting is refused;
- restore the best: final/ holds the best checkpoint's weights under early stopping.

It uses the recipe's attributes set in `Recipe.setup` (model, optimizer, scheduler, publisher,
state, staging, accelerator, sharded, ...).
"""

from __future__ import annotations

import time
from typing import Any

from tuneloop.trainer import sharding
from tuneloop.trainer.checkpoint import (
    capture_rng,
    is_sharded_checkpoint,
    load_trained_weights,
    read_local,
    read_trainer_files,
    step_prefix,
    take_snapshot,
    write_snapshot,
    write_trainer_files,
)
from tuneloop.trainer.config import PermanentError


class Checkpointing:
    """Recipe steps that save, resume and restore checkpoints (mixed into `Recipe`)."""

    state: Any
    model: Any

    def resume_from_latest(self) -> None:
        self._rng_states: list[dict[str, Any]] = []
        self.saved_step: int | None = None
        checkpoints = self.publisher.complete_checkpoints()
        if not checkpoints:
            return
        step = self.saved_step = max(checkpoints)
        if is_sharded_checkpoint(checkpoints[step]) != self.sharded:
            raise PermanentError(f"checkpoint step {step} was written with{'out' if self.sharded else ''} training.sharding: fsdp, "
                                 "and this run is configured otherwise; resume it with the sharding it was saved with")
        local = self.staging / f"resume-{step}"
        if self.sharded:
            # .metadata and the trainer files first, then only the shard files DCP's plan reads for
            # this rank (resharding if the world size changed), not the whole state once per rank.
            self.publisher.download(step, local, skip=lambda name: name.endswith(".distcp"))
            needed = sharding.files_to_read(local, self.model, self.optimizer)
            self.publisher.download(step, local, skip=lambda name: name not in needed)
            sharding.load_sharded(local, self.model, self.optimizer)
            self.state, self._rng_states = read_trainer_files(local, self.scheduler)
        else:
            self.publisher.download(step, local)
            self.state, self._rng_states = read_local(local, self.accelerator.unwrap_model(self.model), self.optimizer,
                                                      self.scheduler, scaler=self.accelerator.scaler)
        if self.state.world_size != self.world:
            # Data order depends on the world size: keep the epoch and the share of it already seen.
            # Exact resume (same batches, same RNG) needs the same number of processes.
            self.log(f"resuming with {self.world} processes instead of {self.state.world_size}: the data order "
                     "from here on differs from an uninterrupted run")
            self.state.batch_in_epoch = self.state.batch_in_epoch * self.state.world_size // self.world
            self.state.world_size = self.world
        self.log(f"resumed from {self.output.child(step_prefix(step))} (step {step}, epoch {self.state.epoch}, batch {self.state.batch_in_epoch})")
        self.metrics.set_checkpoint("latest", self.output.child(step_prefix(step)))
        best = self.publisher.best_step(checkpoints)
        if best is not None:
            self.metrics.set_checkpoint("best", self.output.child(step_prefix(best)))

    def save_checkpoint(self, evaluated: dict[str, float], *, wait: bool = False) -> None:
        """Snapshot the state to CPU memory (all ranks join to gather RNG states); rank 0 writes and
        uploads it in the background, so the loop stalls only for the copy (checkpoint.py).

        `wait` (the SIGTERM save) writes and uploads before returning.
        """
        from accelerate.utils import gather_object

        started = time.monotonic()
        rng_states = gather_object([capture_rng()]) if self.world > 1 else [capture_rng()]
        if self.sharded:
            self.save_sharded_checkpoint(evaluated, rng_states)
        elif self.is_main:
            self.publisher.wait()  # at most one checkpoint in flight: its snapshot is the only extra memory
            snapshot = take_snapshot(self.accelerator.unwrap_model(self.model), self.optimizer, self.scheduler,
                                     rng_states, self.state, self.spec.to_dict(), scaler=self.accelerator.scaler,
                                     buffers=self.snapshot_buffers)
            self.last_snapshot_bytes = snapshot.nbytes
            self.publisher.publish(self.staging / f"step-{self.state.step:08d}", self.state.step, evaluated,
                                   background=not wait, write=lambda local: write_snapshot(local, snapshot))
        self.accelerator.wait_for_everyone()
        self.saved_step = self.state.step
        self.checkpoint_stalls.append(time.monotonic() - started)

    def save_sharded_checkpoint(self, evaluated: dict[str, float], rng_states: list[dict[str, Any]]) -> None:
        """FSDP: every rank writes and uploads its own DCP shards; rank 0 adds the trainer files and,
        once every rank's upload succeeded, the manifest. On the loop: each rank moves 1/world of the state."""
        from accelerate.utils import gather_object

        started, step = time.monotonic(), self.state.step
        local = self.staging / f"step-{step:08d}"
        sharding.save_sharded(local, self.model, self.optimizer)
        error = None
        try:
            if self.is_main:
                write_trainer_files(local, self.scheduler.state_dict(), rng_states, self.state.to_json(), self.spec.to_dict())
            files: dict[str, int] | None = self.publisher.upload_files(local, step)
        except Exception as e:  # noqa: BLE001 - every rank must reach the gather below, then all fail together
            files, error = None, e
        uploaded = gather_object([files])
        if any(f is None for f in uploaded):  # no manifest: this step never becomes a checkpoint
            raise RuntimeError(f"checkpoint step {step}: a rank's upload failed: {error or 'on another rank'}") from error
        if self.is_main:
            self.publisher.write_manifest(step, {k: v for f in uploaded for k, v in f.items()}, evaluated, started)

    def _on_published(self, step: int, uri: str, seconds: float, size: int, is_best: bool) -> None:
        self.metrics.observe_checkpoint(seconds, size)
        self.metrics.set_checkpoint("latest", uri)
        if is_best:
            self.metrics.set_checkpoint("best", uri)
        self._log(f"tuneloop-train: checkpoint step {step} published to {uri} ({size / 1e6:.1f} MB, {seconds:.1f}s)")

    def restore_best(self) -> int:
        """Load the best checkpoint's trained weights on every rank; returns the step now in the model.

        final/ and the test metrics are then the best model's, not the one `patience`
        evaluations past it (HF Trainer's load_best_model_at_end).
        """
        if self.is_main:
            self.publisher.wait()
        self.accelerator.wait_for_everyone()
        step = self.state.best_step
        if step not in self.publisher.complete_checkpoints():
            self.log(f"warning: the best step {step} has no checkpoint; exporting the weights of step {self.state.step}")
            return self.state.step
        if self.sharded:
            local = self.staging / f"best-{step}"
            self.publisher.download(step, local)
            sharding.load_sharded(local, self.model, None)
        else:
            local = self.staging / f"best-{step}" / "model.safetensors"
            self.output.download_file(f"{step_prefix(step)}/model.safetensors", local)
            load_trained_weights(local, self.accelerator.unwrap_model(self.model))
        self.log(f"exporting the best checkpoint, step {step} ({self.metric_name} {self.state.best_metric:.4f}), "
                 f"not the last weights (step {self.state.step})")
        return step
