"""Checkpoints: what goes in one, how it is published atomically, found again, and pruned.

Layout under `<output.uri>/checkpoints/step-NNNNNNNN/` (8 digits, so names sort by step):

    model.safetensors    trainable parameters (all of them, or the LoRA adapter and head)
    optimizer.pt         AdamW state      (torch.save; read back with weights_only=True)
    scheduler.pt         LR scheduler state
    rng.pt               python + torch (+ CUDA) RNG states of every rank
    scaler.pt            fp16 only: the GradScaler's loss scale, so an fp16 resume is exact
    trainer_state.json   step, data position (epoch, batch), best metric, early-stopping count
    spec.json            the FineTuneJob spec the run used
    manifest.json        written LAST: file names and sizes, step, eval metrics

With `training.sharding: fsdp` the weights and optimizer state are a torch.distributed.checkpoint
(DCP) instead of model.safetensors + optimizer.pt: `.metadata` and one `__<rank>_0.distcp`
per rank, each written and uploaded by its own rank (sharding.py); rank 0 writes the manifest
once every rank's upload is done.

A checkpoint without manifest.json is incomplete and never resumed from; a manifest whose
files are missing or of another size is ignored too.

Saving does not stall training (issue 15 item 3): the training thread only copies the state
into CPU memory (`take_snapshot`: trainable weights, optimizer moments, scheduler, RNG; a
fresh copy, never a view of a live tensor), and a background thread writes the files to a
local staging folder and uploads them (`CheckpointPublisher.publish(write=...)`). At most one
checkpoint is in flight: the next save first waits for the previous one, so the extra memory
is one snapshot, about (1 + number of optimizer moments) x the trainable weights (AdamW in
fp32: 12 bytes per trainable parameter), whose buffers are reused from save to save.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from tuneloop.trainer.storage import KeyMissing, Storage, local_path_inside

CHECKPOINTS = "checkpoints"
MANIFEST = "manifest.json"
_STEP_DIR = re.compile(r"^checkpoints/step-(\d{8})/(.+)$")

# The only files a manifest may name: anything else in one (`../../x`, `/abs`, a `.py`) was not
# written by us, so the checkpoint is not resumed from (issue 13).
CHECKPOINT_FILES = frozenset({"model.safetensors", "optimizer.pt", "scheduler.pt", "rng.pt", "trainer_state.json", "spec.json",
                              "scaler.pt"})  # scaler.pt: mixed-precision GradScaler state (issue 8)

# A DCP checkpoint's files (sharding: fsdp): one data file per rank and the metadata.
DCP_FILE = re.compile(r"^(__\d{1,6}_\d{1,6}\.distcp|\.metadata)$")

LOWER_IS_BETTER = {"eval_loss", "perplexity", "mse", "mae"}


def step_prefix(step: int) -> str:
    return f"{CHECKPOINTS}/step-{step:08d}"


def is_better(metric: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value < best if metric in LOWER_IS_BETTER else value > best


@dataclass
class TrainerState:
    """Everything besides tensors that resuming needs."""

    step: int = 0
    epoch: int = 0  # epoch being read
    batch_in_epoch: int = 0  # optimizer steps (groups of micro-batches) done in that epoch
    best_metric: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    train_seconds: float = 0.0
    last_train_loss: float | None = None
    test_before: dict[str, float] | None = None  # test metrics of the base model, for results.json
    world_size: int = 1
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "TrainerState":
        return cls(**json.loads(text))


@dataclass
class Snapshot:
    """A checkpoint's content, copied off the training state: CPU tensors that nothing else holds."""

    step: int
    tensors: dict[str, Any]  # trainable parameters by name
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng_states: list[dict[str, Any]]
    state_json: str
    spec: dict[str, Any]
    scaler: dict[str, Any] | None = None

    @property
    def nbytes(self) -> int:
        """Bytes of tensor data the snapshot holds (weights and optimizer state)."""
        return sum(t.numel() * t.element_size() for t in _tensors_in([self.tensors, self.optimizer]))


def _tensors_in(tree: Any) -> list[Any]:
    import torch

    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [t for v in tree.values() for t in _tensors_in(v)]
    if isinstance(tree, (list, tuple)):
        return [t for v in tree for t in _tensors_in(v)]
    return []


class SnapshotBuffers:
    """CPU (pinned, on GPU) buffers a snapshot is copied into, kept from one save to the next.

    Allocating hundreds of MB afresh costs page faults (measured here: a fresh 400 MB copy
    1.1-1.4 s, into reused buffers 0.3-0.5 s, on 2 loaded CPU cores); torch's DCP `async_save`
    keeps its staging copy for the same reason. Reuse is safe because at most one checkpoint
    is in flight: the recipe waits for the previous write to finish before the next copy.
    The cost is one snapshot's memory held for the rest of the run.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, Any] = {}

    def copy(self, tree: Any, path: str = "") -> Any:
        """A deep copy of a state tree, every tensor copied into this object's CPU buffers.

        On CPU `tensor.to("cpu")` returns the tensor itself, so an explicit copy is what keeps
        the optimizer's next step out of a checkpoint still being written.
        """
        import torch

        if isinstance(tree, torch.Tensor):
            buffer = self._buffers.get(path)
            if buffer is None or buffer.shape != tree.shape or buffer.dtype != tree.dtype:
                buffer = torch.empty(tree.shape, dtype=tree.dtype, device="cpu", pin_memory=tree.is_cuda)
                self._buffers[path] = buffer
            return buffer.copy_(tree.detach(), non_blocking=tree.is_cuda)
        if isinstance(tree, dict):
            return {k: self.copy(v, f"{path}/{k}") for k, v in tree.items()}
        if isinstance(tree, (list, tuple)):
            return type(tree)(self.copy(v, f"{path}/{i}") for i, v in enumerate(tree))
        return copy.deepcopy(tree)


def take_snapshot(model: Any, optimizer: Any, scheduler: Any, rng_states: list[dict[str, Any]], state: TrainerState,
                  spec_dict: dict[str, Any], scaler: Any = None, buffers: SnapshotBuffers | None = None) -> Snapshot:
    """Copy what a checkpoint holds into CPU memory; the only part of a save on the training thread.

    `buffers`: reuse the previous snapshot's memory (its checkpoint must be written by now).
    """
    import torch

    buffers = buffers or SnapshotBuffers()
    tensors = buffers.copy({n: p for n, p in model.named_parameters() if p.requires_grad}, "model")
    optim = buffers.copy(optimizer.state_dict(), "optimizer")
    if torch.cuda.is_available():
        torch.cuda.synchronize()  # the non-blocking device-to-host copies have landed
    return Snapshot(step=state.step, tensors=tensors, optimizer=optim, scheduler=copy.deepcopy(scheduler.state_dict()),
                    rng_states=copy.deepcopy(rng_states), state_json=state.to_json(), spec=copy.deepcopy(spec_dict),
                    scaler=copy.deepcopy(scaler.state_dict()) if scaler is not None else None)


def write_snapshot(directory: Path, snapshot: Snapshot) -> None:
    """Write every checkpoint file except the manifest into `directory` (any thread)."""
    import torch
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tensors = {n: t.contiguous() for n, t in snapshot.tensors.items()}
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt", "step": str(snapshot.step)})
    torch.save(snapshot.optimizer, directory / "optimizer.pt")
    write_trainer_files(directory, snapshot.scheduler, snapshot.rng_states, snapshot.state_json, snapshot.spec, snapshot.scaler)


def write_trainer_files(directory: Path, scheduler: dict[str, Any], rng_states: list[dict[str, Any]], state_json: str,
                        spec: dict[str, Any], scaler: dict[str, Any] | None = None) -> None:
    """The checkpoint files besides weights and optimizer state (both layouts share them)."""
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    torch.save(scheduler, directory / "scheduler.pt")
    torch.save(rng_states, directory / "rng.pt")
    if scaler is not None:
        torch.save(scaler, directory / "scaler.pt")
    (directory / "trainer_state.json").write_text(state_json)
    (directory / "spec.json").write_text(json.dumps(spec, indent=1))


def write_local(directory: Path, model: Any, optimizer: Any, scheduler: Any, rng_states: list[dict[str, Any]],
                state: TrainerState, spec_dict: dict[str, Any], scaler: Any = None) -> None:
    """Write every checkpoint file except the manifest into `directory`, now."""
    write_snapshot(directory, take_snapshot(model, optimizer, scheduler, rng_states, state, spec_dict, scaler))


def read_local(directory: Path, model: Any, optimizer: Any, scheduler: Any,
               scaler: Any = None) -> tuple[TrainerState, list[dict[str, Any]]]:
    """Load a checkpoint folder into model/optimizer/scheduler; returns the state and RNG states."""
    import torch
    from safetensors.torch import load_file

    tensors = load_file(str(directory / "model.safetensors"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(tensors) != trainable:
        missing = sorted(trainable - set(tensors))[:3]
        raise RuntimeError(f"checkpoint {directory.name} does not match the model (missing e.g. {missing}); was the config changed?")
    model.load_state_dict(tensors, strict=False)
    optimizer.load_state_dict(torch.load(directory / "optimizer.pt", weights_only=True))
    return read_trainer_files(directory, scheduler, scaler)


def read_trainer_files(directory: Path, scheduler: Any, scaler: Any = None) -> tuple[TrainerState, list[dict[str, Any]]]:
    """Scheduler (and scaler) state loaded; the trainer state and every rank's RNG states returned."""
    import torch

    scheduler.load_state_dict(torch.load(directory / "scheduler.pt", weights_only=True))
    rng = torch.load(directory / "rng.pt", weights_only=True)
    if scaler is not None and (directory / "scaler.pt").exists():
        scaler.load_state_dict(torch.load(directory / "scaler.pt", weights_only=True))
    return TrainerState.from_json((directory / "trainer_state.json").read_text()), rng


def load_trained_weights(path: Path, model: Any) -> None:
    """A checkpoint's model.safetensors (trained parameters only) into `model`."""
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path)), strict=False)


def capture_rng() -> dict[str, Any]:
    import random

    import torch

    states: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def restore_rng(states: dict[str, Any]) -> None:
    import random

    import torch

    random.setstate(states["python"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


def known_file(name: str) -> bool:
    return name in CHECKPOINT_FILES or DCP_FILE.match(name) is not None


def is_sharded_checkpoint(manifest: dict[str, Any]) -> bool:
    return ".metadata" in manifest.get("files", {})


def manifest_files_ok(manifest: Any) -> bool:
    """True when the manifest's `files` maps known checkpoint file names to integer sizes."""
    files = manifest.get("files") if isinstance(manifest, dict) else None
    return (isinstance(files, dict) and all(isinstance(name, str) and known_file(name) for name in files)
            and all(type(size) is int and size >= 0 for size in files.values()))


class CheckpointPublisher:
    """Writes and uploads checkpoint folders (manifest last), prunes old ones, and finds the newest.

    One checkpoint at a time in a background thread; `publish` waits for the previous one
    first, so at most one checkpoint is in flight and order is preserved. A write or upload
    that fails leaves no manifest, so it never becomes the latest checkpoint; its error is
    raised in the training thread at the next `publish` or `wait`.
    """

    def __init__(self, storage: Storage, keep_last: int, metric: str,
                 on_published: Callable[[int, str, float, int, bool], None] | None = None):
        self.storage = storage
        self.keep_last = max(1, keep_last)
        self.metric = metric
        self.on_published = on_published
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # ------------------------------------------------------------------ discovery

    def complete_checkpoints(self) -> dict[int, dict[str, Any]]:
        """step -> manifest of every complete checkpoint under the output URI."""
        keys = self.storage.list(CHECKPOINTS)
        found: dict[int, set[str]] = {}
        for key in keys:
            m = _STEP_DIR.match(key)
            if m:
                found.setdefault(int(m.group(1)), set()).add(m.group(2))
        complete = {}
        for step, names in found.items():
            if MANIFEST not in names:
                continue
            try:
                manifest = json.loads(self.storage.read_bytes(f"{step_prefix(step)}/{MANIFEST}"))
            except (ValueError, OSError, KeyMissing):  # unreadable, or pruned since the listing
                continue
            if manifest_files_ok(manifest) and set(manifest["files"]) <= names:
                complete[step] = manifest
        return complete

    def all_steps(self) -> set[int]:
        return {int(m.group(1)) for k in self.storage.list(CHECKPOINTS) if (m := _STEP_DIR.match(k))}

    def download(self, step: int, local: Path, *, skip: Callable[[str], bool] | None = None) -> None:
        """Checkpoint `step`'s files into `local`, each checked against the manifest's size; `skip(name)`: leave it out."""
        manifest = json.loads(self.storage.read_bytes(f"{step_prefix(step)}/{MANIFEST}"))
        if not manifest_files_ok(manifest):
            raise RuntimeError(f"checkpoint step {step}: its manifest names files other than {sorted(CHECKPOINT_FILES)} "
                               "and DCP shards")
        local.mkdir(parents=True, exist_ok=True)
        for name, size in manifest["files"].items():
            if skip is not None and skip(name):
                continue
            target = local_path_inside(local, name)
            self.storage.download_file(f"{step_prefix(step)}/{name}", target)
            if target.stat(follow_symlinks=False).st_size != size:
                raise RuntimeError(f"checkpoint step {step}: {name} has {target.stat().st_size} bytes, manifest says {size}")

    def best_step(self, checkpoints: dict[int, dict[str, Any]]) -> int | None:
        best, best_value = None, None
        for step, manifest in sorted(checkpoints.items()):
            value = manifest.get("metrics", {}).get(self.metric)
            if value is not None and is_better(self.metric, value, best_value):
                best, best_value = step, value
        return best

    # ------------------------------------------------------------------ publishing

    def publish(self, local: Path, step: int, metrics: dict[str, float], *, background: bool = True,
                write: Callable[[Path], None] | None = None) -> None:
        """Upload `local` as checkpoint `step`; `write(local)` first fills the folder (in the same thread)."""
        self.wait()
        if background:
            self._thread = threading.Thread(target=self._run, args=(local, step, metrics, write), name=f"checkpoint-step-{step}",
                                            daemon=True)
            self._thread.start()
        else:
            self._write_and_upload(local, step, metrics, write)

    @property
    def in_flight(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self) -> None:
        """Block until the in-flight upload is done; re-raise its error here, in the training thread."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"checkpoint upload failed: {error}") from error

    def _run(self, local: Path, step: int, metrics: dict[str, float], write: Callable[[Path], None] | None) -> None:
        try:
            self._write_and_upload(local, step, metrics, write)
        except BaseException as e:  # noqa: BLE001 - handed to the training thread by wait()
            self._error = e

    def _write_and_upload(self, local: Path, step: int, metrics: dict[str, float], write: Callable[[Path], None] | None) -> None:
        try:
            if write is not None:
                write(local)
            self._upload(local, step, metrics)
        except BaseException:
            shutil.rmtree(local, ignore_errors=True)  # a failed checkpoint leaves nothing on the local disk
            raise

    def _upload(self, local: Path, step: int, metrics: dict[str, float]) -> None:
        started = time.monotonic()
        files = self.upload_files(local, step)
        self.write_manifest(step, files, metrics, started)

    def upload_files(self, local: Path, step: int) -> dict[str, int]:
        """Upload every file in `local` under checkpoint `step`, then delete `local`; returns name -> size."""
        prefix = step_prefix(step)
        files = {p.name: p.stat().st_size for p in sorted(local.iterdir()) if p.is_file()}
        for name in files:
            self.storage.upload_file(local / name, f"{prefix}/{name}")
        shutil.rmtree(local, ignore_errors=True)
        return files

    def write_manifest(self, step: int, files: dict[str, int], metrics: dict[str, float], started: float) -> None:
        """Complete checkpoint `step` (its files all uploaded), then prune; the manifest is the last write."""
        prefix = step_prefix(step)
        manifest = {"step": step, "files": files, "metrics": metrics, "created": time.time(), "format": 1}
        self.storage.write_bytes(f"{prefix}/{MANIFEST}", json.dumps(manifest, indent=1).encode())
        best = self.prune(step)
        if self.on_published:
            self.on_published(step, self.storage.child(prefix), time.monotonic() - started, sum(files.values()), best == step)

    def prune(self, current: int) -> int | None:
        """Keep the newest `keep_last` complete checkpoints and the best one; drop the rest.

        Incomplete folders older than `current` are leftovers of a crash and go too. The
        manifest is deleted first so a half-deleted checkpoint never looks complete.
        """
        complete = self.complete_checkpoints()
        best = self.best_step(complete)
        keep = set(sorted(complete)[-self.keep_last:]) | ({best} if best is not None else set())
        for step in sorted(self.all_steps()):
            if step in keep or (step not in complete and step >= current):
                continue
            keys = self.storage.list(step_prefix(step))
            self.storage.delete([k for k in keys if k.endswith(MANIFEST)])
            self.storage.delete([k for k in keys if not k.endswith(MANIFEST)])
        return best
