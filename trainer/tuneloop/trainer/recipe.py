"""The fine-tuning recipe: setup(), train(), evaluate(), save_checkpoint(), cleanup().

One readable loop in the style of torchtune's `full_finetune_single_device.py` and nanoGPT's
`train.py`: for each optimizer step, run its micro-batches (forward, loss, backward), clip,
step, log, maybe evaluate, maybe checkpoint. Storage, metrics and the logger are passed in,
so the recipe runs the same in a pod, in a test and on a laptop.

Multi-process: `accelerate.Accelerator()` reads the torch.distributed variables set by
torchrun (see cli.py). Every rank reads the data and base model; only rank 0 writes to the
output storage and serves metrics. Data order is a pure function of (seed, epoch,
world size) (`data.epoch_batches`), so resuming re-derives it and skips what was done.

Beside it: examples.py (rows to tokens), evaluation.py (metrics from sums), checkpoint.py
(what a checkpoint holds, publishing), checkpointing.py (the recipe's save, resume and restore
the best), export.py (final/ in Hugging Face format).
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.trainer import batching, data, distributed, sharding, throughput, token_cache
from tuneloop.trainer.checkpoint import CheckpointPublisher, SnapshotBuffers, TrainerState, is_better, restore_rng, step_prefix
from tuneloop.trainer.checkpointing import Checkpointing
from tuneloop.trainer.config import PermanentError, RuntimeSettings
from tuneloop.trainer.dataset import Splits, load_splits
from tuneloop.trainer.export import export_model
from tuneloop.trainer.loader import StepPrefetcher
from tuneloop.trainer.evaluation import DEFAULT_METRIC, metric_direction_ok, task_metrics
from tuneloop.trainer.metrics import TrainerMetrics
from tuneloop.trainer.dropout import describe as describe_dropout
from tuneloop.trainer.model import apply_training_method, fetch_model, load_model, load_tokenizer, resolve_dropout, sequence_limit
from tuneloop.trainer.precision import load_dtype, mixed_precision, upcast_trainable
from tuneloop.trainer.storage import Storage, open_storage

class Preempted(Exception):
    """SIGTERM arrived; a checkpoint was published. The CLI exits EXIT_PREEMPTED (retryable)."""


class TrialPruned(Exception):
    """`on_evaluate` asked to stop: a search trial whose evaluations are not promising (search.py)."""


def quiet_transformers() -> None:
    """No per-file "Loading weights" / "Writing model shards" bars: noise next to our progress bar."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


class Recipe(Checkpointing):
    sharded = False  # training.sharding: fsdp (set in setup)
    saved_step: int | None = None  # the step of the newest checkpoint saved or resumed from

    def __init__(self, spec: FineTuneJobSpec, settings: RuntimeSettings, *,
                 metrics: TrainerMetrics | None = None, log: Callable[[str], None] = print,
                 on_evaluate: Callable[[int, dict[str, float]], bool] | None = None):
        """`on_evaluate(step, validation metrics)` is called after each evaluation during
        training; True stops the run with TrialPruned (a search's pruner, search.py)."""
        self.spec = spec
        self.on_evaluate = on_evaluate
        self.settings = settings
        self.metrics = metrics or TrainerMetrics(settings.job_name, settings.namespace)
        self._log = log
        self.stop_requested = False
        self.checkpoint_stalls: list[float] = []  # seconds the loop waited per save (bench/checkpoint_stall.py)
        self.results: dict[str, Any] = {}

    # ================================================================== setup

    def log(self, message: str) -> None:
        if self.accelerator.is_main_process:
            self._log(f"tuneloop-train: {message}")

    def setup(self, *, resume: bool = True) -> None:
        from accelerate import Accelerator
        from accelerate.utils import set_seed
        quiet_transformers()

        spec, training = self.spec, self.spec.training
        # Under FSDP the compute dtype is FSDP2's MixedPrecisionPolicy (sharding.py), not accelerate's
        # autocast; fp16 would need a sharded grad scaler, so a GPU without bf16 trains fp32 there.
        self.sharded = training.sharding == "fsdp"
        compute = mixed_precision(training.precision)
        self.compute_precision = "no" if self.sharded and compute == "fp16" else compute
        self.own_process_group = self.sharded and sharding.ensure_process_group()
        self.accelerator = Accelerator(mixed_precision="no" if self.sharded else compute, cpu=not torch.cuda.is_available(),
                                       kwargs_handlers=[distributed.process_group_timeout(self.settings.collective_timeout)])
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        self.is_main = self.accelerator.is_main_process
        self.output: Storage = open_storage(spec.output.uri, self.settings)
        self.metric_name = training.early_stopping.metric if training.early_stopping else DEFAULT_METRIC
        if not metric_direction_ok(spec.task, self.metric_name):
            raise PermanentError(f"training.earlyStopping.metric {self.metric_name!r} is not a {spec.task} metric")
        self.publisher = CheckpointPublisher(self.output, spec.output.keep_last, self.metric_name, self._on_published)
        self.staging = Path(tempfile.mkdtemp(prefix=f"tuneloop-rank{self.rank}-"))
        self.snapshot_buffers = SnapshotBuffers()

        # Data: read and clean on every rank (cheap next to training; no shared disk needed).
        self.splits: Splits = load_splits(spec, self.settings)
        self.metrics.set_data(self.splits.reports)
        # With early stopping, final/ holds the best checkpoint's weights (a save at each improvement).
        self.export_best = bool(training.early_stopping and training.early_stopping.export_best)
        if self.metric_name != DEFAULT_METRIC or training.early_stopping:
            if not self.splits.validation:
                raise PermanentError("training.earlyStopping needs validation data; give dataset.validation or dataset.split.validation > 0")

        # Model: one download per node (local main first), then everyone loads from the cache.
        with self.accelerator.local_main_process_first():
            self.model_dir = fetch_model(spec.model.source, self.settings, spec.model.revision)
        self.tokenizer = load_tokenizer(self.model_dir)
        set_seed(training.seed)  # same fresh head on every rank
        mixed = self.compute_precision
        self.dropout, dropout_before = resolve_dropout(spec, self.model_dir)
        if self.dropout:
            self.log(f"dropout: {describe_dropout(self.dropout, dropout_before)}")
        model = load_model(spec, self.model_dir, self.splits.label_names, self.tokenizer,
                           dtype=load_dtype(mixed, trainable=training.method == "full"), config_overrides=self.dropout)
        model = upcast_trainable(apply_training_method(model, spec))
        self.max_seq_length = self.fit_max_seq_length(model)

        self.rows_changed: dict[str, dict[str, int]] = {}
        self.examples = {name: self.encode(rows, name) for name, rows in
                         (("train", self.splits.train), ("validation", self.splits.validation), ("test", self.splits.test))}
        if not self.examples["train"]:
            if "train" in self.splits.reports and self.splits.reports["train"].dropped.get("chat_template_not_prefix_stable"):
                raise PermanentError("the tokenizer's chat template is not prefix-stable for any training conversation, so the "
                                     "response tokens cannot be found; use a model whose chat template renders each prefix of a "
                                     "conversation as the conversation's start")
            raise PermanentError("no training example has a response token left after truncation; raise training.maxSeqLength")
        # Batching per attention kernel (batching.py): packed rows only where a varlen kernel takes them.
        self.batching = batching.choose_batching(training.batching, training.packing, spec.task, training.attention_implementation)
        self.packed = self.batching == "packed" and self.packing_is_safe(model)
        if self.batching == "packed" and not self.packed:
            self.batching = "length-grouped"
        self.train_items = data.pack_examples(self.examples["train"], self.max_seq_length) if self.packed else self.examples["train"]
        self.train_lengths = self.train_items.lengths() if self.train_items is self.examples["train"] else \
            [len(item["input_ids"]) for item in self.train_items]
        self.write_data_report()

        micro_per_epoch = len(self.epoch_plan(0))
        if micro_per_epoch == 0:
            raise PermanentError(f"{len(self.train_items)} training rows are fewer than the {self.world} processes; add data")
        self.steps_per_epoch = math.ceil(micro_per_epoch / training.gradient_accumulation_steps)
        self.total_steps = training.max_steps or max(1, math.ceil((training.epochs or 1.0) * self.steps_per_epoch))
        from transformers import get_scheduler

        # Batches are built by epoch_batches (not an accelerate-prepared DataLoader) so that
        # the data position in a checkpoint is two integers and resume is exact. The scheduler
        # stays out of prepare(): accelerate would step it once per process (distributed.py).
        if self.sharded:  # FSDP2 directly (accelerate 1.15 falls back to DDP on CPU); the optimizer sees the shards
            self.model = sharding.shard_model(model.to(self.accelerator.device), self.compute_precision)
            self.optimizer = self.build_optimizer(self.model)
        else:
            self.model, self.optimizer = self.accelerator.prepare(model, self.build_optimizer(model))
        self.scheduler = get_scheduler(
            "constant_with_warmup" if training.scheduler == "constant" else training.scheduler,
            self.optimizer,
            num_warmup_steps=math.ceil(training.warmup_ratio * self.total_steps),  # as transformers.Trainer
            num_training_steps=self.total_steps,
        )
        self.state = TrainerState(world_size=self.world)
        self.flop_counts = throughput.FlopCounts.of(model)
        self.metrics.set(total_steps=self.total_steps, step=0, progress_ratio=0.0)
        if resume:
            self.resume_from_latest()
        set_seed(training.seed + 1000 * self.rank + self.state.step)  # dropout differs by rank
        if self.state.step and self.world == self.state.world_size and self._rng_states:
            restore_rng(self._rng_states[self.rank])

    def encode(self, rows: list[data.Row], split: str) -> token_cache.TokenArrays:
        """Tokenise one split (once per node: token_cache.py); rows that cannot be used are counted in the data report."""
        examples, encoded = token_cache.encode_once(rows, self.spec, self.tokenizer, Path(self.tokenizer.name_or_path), self.splits.label_names,
                                                    self.max_seq_length, Path(self.settings.cache_dir).expanduser(), self.accelerator)
        dropped, changes = encoded.dropped, encoded.changes
        if dropped:
            report = self.splits.reports.get(split)
            if report is not None:
                for reason, n in dropped.items():
                    report.dropped[reason] = report.dropped.get(reason, 0) + n
            self.metrics.set_data(self.splits.reports)
        self.rows_changed[split] = dict(changes)
        if changes.get("response_truncated") and split == "train":
            self.log(f"warning: {changes['response_truncated']} training responses were cut at training.maxSeqLength "
                     f"{self.max_seq_length} even without their prompt; raise it to train on whole answers")
        if dropped.get("chat_template_not_prefix_stable") or changes.get("only_last_turn_trained"):
            self.log(f"warning: the chat template is not prefix-stable ({split}): "
                     f"{changes.get('only_last_turn_trained', 0)} conversations train on their last assistant turn only, "
                     f"{dropped.get('chat_template_not_prefix_stable', 0)} dropped")
        return examples

    def fit_max_seq_length(self, model: Any) -> int:
        """training.maxSeqLength, clamped to what the model can take (a warning says so)."""
        wanted, limit = self.spec.training.max_seq_length, sequence_limit(model, self.tokenizer)
        if limit is not None and wanted > limit:
            self.log(f"warning: training.maxSeqLength {wanted} exceeds the model's limit of {limit} tokens; "
                     f"using {limit} (set training.maxSeqLength <= {limit} to silence this)")
            return limit
        return wanted

    def epoch_plan(self, epoch: int) -> batching.Plan:
        """This epoch's micro-batches, plan[b][rank] -> item indices; a pure function of (seed, epoch, world)."""
        training = self.spec.training
        return batching.epoch_plan(self.batching, self.train_lengths, training.batch_size, self.world, training.seed, epoch,
                                   training.batch_tokens)

    @property
    def flatten_packs(self) -> bool:
        """flash_attention_2 takes a micro-batch's packed rows as one row (data.flatten_packs)."""
        return self.spec.training.attention_implementation == "flash_attention_2"

    def packing_is_safe(self, model: Any) -> bool:
        """Pack only if this model keeps packed sequences apart; else padded batches (packing_guard.py)."""
        from tuneloop.trainer.packing_guard import packing_isolates

        model.to(self.accelerator.device)
        isolated, difference = packing_isolates(model, self.accelerator.device, flatten=self.flatten_packs)
        isolated = distributed.global_sum(self.accelerator, 0.0 if isolated else 1.0) == 0
        self.packing_note = None if isolated else (
            f"{model.config.model_type} lets packed sequences attend to each other (relative logit difference "
            f"{difference:.2g}); training on padded batches instead")
        if self.packing_note:
            self.log(f"packing disabled: {self.packing_note}")
        return isolated

    def write_data_report(self) -> None:
        report = self.splits.report()
        tokens = int(self.examples["train"].offsets[-1])
        report["tokenized"] = {name: len(exs) for name, exs in self.examples.items()}
        report["tokenized"]["train_tokens"] = tokens
        report["tokenized"]["max_seq_length"] = self.max_seq_length
        report["tokenized"]["batching"] = self.batching
        report["tokenized"]["rows_changed"] = {split: n for split, n in self.rows_changed.items() if n}
        if getattr(self, "packing_note", None):
            report["tokenized"]["packing_disabled"] = self.packing_note
        if self.packed:
            capacity = len(self.train_items) * self.max_seq_length
            report["tokenized"]["packed_rows"] = len(self.train_items)
            report["tokenized"]["packing_efficiency"] = round(tokens / capacity, 4)
        self.data_report = report
        if self.is_main:
            self.output.write_bytes("data_report.json", json.dumps(report, indent=1).encode())
            self.log(f"data: {report['rows']}, labels: {report['labels']}" if report["labels"] else f"data: {report['rows']}")
            if report.get("augmentation"):
                a = report["augmentation"]
                self.log(f"augmentation: {a['added']} extra training rows from {a['rows_in']} ({a['deleted_words']} words deleted, "
                         f"{a['swapped_words']} swapped, {a['inserted_words']} inserted; {a['unchanged']} unchanged)")

    def build_optimizer(self, model: Any) -> torch.optim.Optimizer:
        """AdamW with decoupled weight decay, none on biases and norms (transformers.Trainer's rule)."""
        from transformers.trainer_pt_utils import get_parameter_names

        decay = set(get_parameter_names(model, [torch.nn.LayerNorm], [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]))
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        groups = [
            {"params": [p for n, p in params if n in decay], "weight_decay": self.spec.training.weight_decay},
            {"params": [p for n, p in params if n not in decay], "weight_decay": 0.0},
        ]
        # Fused: one kernel over all tensors instead of a Python loop per parameter (as Trainer's
        # default adamw_torch_fused); with small batches the loop was a fifth of a CPU step (issue 15).
        fused = all(p.dtype in (torch.float32, torch.float16, torch.bfloat16) for _, p in params)
        return torch.optim.AdamW([g for g in groups if g["params"]], lr=self.spec.training.learning_rate, fused=fused or None)

    # ================================================================== the loop

    def train(self) -> dict[str, Any]:
        training, acc = self.spec.training, self.accelerator
        state = self.state
        self.install_sigterm_handler()
        if state.step == 0 and self.examples["test"]:
            state.test_before = self.evaluate("test")
            self.log(f"test before training: {self._fmt(state.test_before)}")
        progress = self._progress_bar(state.step)
        started, start_step, last_save = time.monotonic(), state.step, time.monotonic()
        stopping_early = False
        self.data_wait_seconds, self.first_batch_wait, self.first_batch_at = 0.0, None, None
        while state.step < self.total_steps and not stopping_early:
            batches = self.epoch_plan(state.epoch)
            groups = [batches[i:i + training.gradient_accumulation_steps] for i in range(0, len(batches), training.gradient_accumulation_steps)]
            # The next steps' batches are collated in a background thread (loader.py); the
            # loop records how long it waited for them (the data-wait share, issue 15 benchmark 4).
            todo = groups[state.batch_in_epoch:state.batch_in_epoch + self.total_steps - state.step]
            prefetch = StepPrefetcher(([[self.train_items[i] for i in batch[self.rank]] for batch in group] for group in todo),
                                      self.collate)
            with prefetch:
                for items, collated in prefetch:
                    self.first_batch_at = self.first_batch_at or time.monotonic()
                    step_started = time.monotonic()
                    loss_sum, n_items, tokens, samples, grad_norm = self.train_step(items, collated)
                    state.step += 1
                    state.batch_in_epoch += 1
                    state.train_seconds += time.monotonic() - step_started
                    # One all-reduce per step: loss, counts, and the stop/save flags every rank must agree on.
                    want_time_save = bool(self.spec.output.save_every_minutes) and self.is_main and \
                        time.monotonic() - last_save >= 60 * self.spec.output.save_every_minutes
                    totals = acc.reduce(torch.tensor([loss_sum, n_items, tokens, samples, float(self.stop_requested), float(want_time_save)],
                                                     dtype=torch.float64, device=acc.device), "sum").tolist()
                    state.last_train_loss = totals[0] / max(totals[1], 1)
                    self.report_step(state.last_train_loss, grad_norm, totals[2], totals[3], time.monotonic() - step_started,
                                     (time.monotonic() - started) / (state.step - start_step))
                    progress.update(1)
                    progress.set_postfix(loss=f"{state.last_train_loss:.4f}", refresh=False)

                    evaluated: dict[str, float] = {}
                    last = state.step >= self.total_steps
                    stop_now = totals[4] > 0
                    every = self.spec.output.save_every_steps
                    save_now = stop_now or totals[5] > 0 or bool(every and state.step % every == 0 and not last)
                    eval_due = bool(training.eval_every_steps and state.step % training.eval_every_steps == 0)
                    # When the run evaluates at all, every checkpoint (but the SIGTERM one, which must be
                    # quick) is evaluated, so the best one is known whatever saveEverySteps and
                    # evalEverySteps are (issue 8 item 9). Runs that never asked for evaluation pay nothing.
                    evaluates = bool(training.eval_every_steps or training.early_stopping)
                    if self.examples["validation"] and not last and (eval_due or (evaluates and save_now and not stop_now)):
                        evaluated = self.evaluate("validation")
                        stopping_early = self.track_best(evaluated)
                        if self.on_evaluate is not None and self.on_evaluate(state.step, evaluated):
                            progress.close()
                            raise TrialPruned(f"pruned at step {state.step} of {self.total_steps}")
                        save_now = save_now or (self.export_best and state.best_step == state.step)
                    if save_now:
                        self.save_checkpoint(evaluated, wait=stop_now)
                        last_save = time.monotonic()
                    if stop_now:
                        progress.close()
                        raise Preempted(f"SIGTERM: checkpoint at step {state.step} published; exiting for a retry to resume")
                    if stopping_early:
                        self.log(f"early stopping at step {state.step}: {self.metric_name} did not improve in "
                                 f"{training.early_stopping.patience} evaluations")
                        break
            self.data_wait_seconds += prefetch.waited
            self.first_batch_wait = prefetch.first_wait if self.first_batch_wait is None else self.first_batch_wait
            if state.batch_in_epoch >= len(groups):
                state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        progress.close()
        return self.finish()

    def train_step(self, micro_batches: list[list[dict[str, Any]]], collated: list[Any] | None = None) -> tuple[float, float, float, float, float]:
        """One optimizer step over this rank's micro-batches (`collated`: their tensors, if prepared): gradients, clip, step."""
        loss_sum, n_items, tokens, samples = self.accumulate_gradients(micro_batches, collated)
        max_norm = self.spec.training.max_grad_norm or float("inf")
        grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), max_norm)
        self.optimizer.step()
        distributed.step_scheduler(self.accelerator, self.scheduler)
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum, n_items, tokens, samples, float(grad_norm)

    def accumulate_gradients(self, micro_batches: list[list[dict[str, Any]]], collated: list[Any] | None = None) -> tuple[float, float, float, float]:
        """Forward and backward over this rank's micro-batches of one step.

        The loss is normalised by the step's target count over all ranks, so the gradient
        equals the single-process one over the same micro-batches (distributed.py).
        """
        acc, model = self.accelerator, self.model
        model.train()
        n_items = sum(data.count_loss_tokens(mb) for mb in micro_batches)
        scale = distributed.loss_scale(self.world, distributed.global_sum(acc, n_items))
        loss_sum = torch.zeros((), dtype=torch.float64, device=acc.device)
        tokens = samples = 0.0
        for i, micro in enumerate(micro_batches):
            batch = collated[i] if collated else self.collate(micro)
            sync = i == len(micro_batches) - 1
            # Gradients are all-reduced (DDP) or reduce-scattered (FSDP) only on the last micro-batch of the step.
            with self.gradient_sync(sync):
                summed = self.loss_sum(self.forward(batch), batch)
                acc.backward(summed * scale)
            loss_sum += summed.detach()  # on the device: one host sync per step, not per micro-batch
            tokens += sum(len(ex["input_ids"]) for ex in micro)
            samples += data.count_sequences(micro)
        return loss_sum.item(), float(n_items), tokens, samples

    def gradient_sync(self, enabled: bool) -> Any:
        if self.sharded:
            return sharding.gradient_sync(self.model, enabled)
        return contextlib.nullcontext() if enabled else self.accelerator.no_sync(self.model)

    def collate(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pad = self.tokenizer.pad_token_id
        if self.packed:
            batch = data.collate_packed(data.flatten_packs(items) if self.flatten_packs else items, pad)
        else:
            batch = data.collate_padded(items, pad)
        # On CUDA, pinned host memory makes the copy asynchronous (collate runs ahead in loader.py).
        cuda = self.accelerator.device.type == "cuda"
        return {k: (v.pin_memory() if cuda else v).to(self.accelerator.device, non_blocking=cuda) for k, v in batch.items()}

    def forward(self, batch: dict[str, torch.Tensor], model: Any = None) -> torch.Tensor:
        """Logits in fp32. Packed SFT batches pass position_ids and no attention_mask (see data.pack_examples)."""
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
        if self.spec.task == "causal-lm-sft":
            inputs["use_cache"] = False
        return (model or self.model)(**inputs).logits.float()

    def loss_sum(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Summed loss of a batch; the caller divides by the targets of the whole optimizer step."""
        if self.spec.task == "causal-lm-sft":
            # Shift the labels, not the logits: `logits[:, :-1].reshape` copies the whole fp32
            # logits tensor when batch > 1 (8.4 GB at 2 x 8192 x 128k vocab; review item 13).
            # The last position gets no target, as in transformers' ForCausalLMLoss.
            targets = F.pad(batch["labels"][:, 1:], (0, 1), value=data.IGNORE_INDEX)
            return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                                   ignore_index=data.IGNORE_INDEX, reduction="sum")
        if self.spec.task == "regression":
            return F.mse_loss(logits.squeeze(-1), batch["label"].float(), reduction="sum")
        return F.cross_entropy(logits, batch["label"], reduction="sum")

    # ================================================================== evaluation

    @torch.no_grad()
    def evaluate(self, split: str) -> dict[str, float]:
        """Task metrics on a split, computed over all ranks (each scores a strided share)."""
        examples = self.examples[split]
        task, acc = self.spec.task, self.accelerator
        # The unwrapped model: DDP's forward syncs buffers with every rank, and a rank whose
        # share is empty (fewer rows than processes) never calls it, a deadlock (issue 8 item 7).
        # accelerate keeps its autocast wrapper on the unwrapped forward.
        # Under FSDP every forward is a collective (it gathers the shards), so a rank with fewer
        # batches runs throw-away forwards until every rank has run as many.
        model = self.model if self.sharded else acc.unwrap_model(self.model)
        model.eval()
        mine = examples[self.rank::self.world]
        if self.packed:
            mine = data.pack_examples(mine, self.max_seq_length)
        else:  # similar lengths together: less padding; the metrics do not depend on the order
            mine = sorted(mine, key=lambda ex: len(ex["input_ids"]))
        loss_sum, count, preds, golds = 0.0, 0, [], []
        size = self.spec.training.batch_size
        if self.sharded:
            batches = math.ceil(len(mine) / size)
            filler = data.pack_examples(examples[:1], self.max_seq_length) if self.packed else examples[:1]
            for _ in range(int(distributed.global_max(acc, batches)) - batches):
                self.forward(self.collate(filler), model)
        for start in range(0, len(mine), size):
            chunk = mine[start:start + size]
            batch = self.collate(chunk)
            logits = self.forward(batch, model)
            loss_sum += self.loss_sum(logits, batch).item()
            count += data.count_loss_tokens(chunk)
            if task != "causal-lm-sft":
                preds += logits.squeeze(-1).tolist() if task == "regression" else logits.argmax(-1).tolist()
                golds += batch["label"].tolist()
        totals = acc.reduce(torch.tensor([loss_sum, float(count)], dtype=torch.float64, device=acc.device), "sum").tolist()
        if self.world > 1 and task != "causal-lm-sft":
            from accelerate.utils import gather_object

            preds, golds = gather_object([preds])[0:self.world], gather_object([golds])[0:self.world]
            preds, golds = [p for ps in preds for p in ps], [g for gs in golds for g in gs]
        result = task_metrics(task, totals[0] / max(totals[1], 1), preds, golds)
        if split == "validation":
            self.metrics.set_eval(result, step=self.state.step)
            self.state.history.append({"step": self.state.step, **result})
        return result

    def track_best(self, result: dict[str, float]) -> bool:
        """Update the best metric; True when early stopping's patience ran out."""
        value = result[self.metric_name]
        if is_better(self.metric_name, value, self.state.best_metric):
            self.state.best_metric, self.state.best_step = value, self.state.step
            self.state.evals_without_improvement = 0
        else:
            self.state.evals_without_improvement += 1
        patience = self.spec.training.early_stopping.patience if self.spec.training.early_stopping else None
        return patience is not None and self.state.evals_without_improvement >= patience

    # ================================================================== checkpoints and export

    def finish(self) -> dict[str, Any]:
        """Final evaluation, export to <output>/final/, results.json, and wait for uploads."""
        state = self.state
        if self.examples["validation"]:
            self.results["validation"] = self.evaluate("validation")
            self.track_best(self.results["validation"])
        if (self.spec.output.save_every_steps or self.spec.output.save_every_minutes) and self.saved_step != state.step:
            # The final weights as a checkpoint (with their validation metrics) before the export:
            # a crash in the export resumes here instead of retraining the tail (review item 17).
            self.save_checkpoint(self.results.get("validation", {}))
        self.exported_step = state.step
        if self.export_best and state.best_step is not None and state.best_step != state.step:
            self.exported_step = self.restore_best()
            if self.exported_step != state.step:
                best = next(h for h in state.history if h["step"] == self.exported_step)
                self.results["validation"] = {k: v for k, v in best.items() if k != "step"}
        if self.examples["test"]:
            self.results["test_before"] = state.test_before
            self.results["test"] = self.evaluate("test")
        self.results.update({"task": self.spec.task, "step": state.step, "total_steps": self.total_steps,
                             "epoch": round(state.step / self.steps_per_epoch, 4), "train_loss": state.last_train_loss,
                             "train_seconds": round(state.train_seconds, 2), "history": state.history,
                             "final_model": self.output.child("final"), "exported_step": self.exported_step})
        if self.dropout:
            self.results["dropout"] = dict(self.dropout)  # what training.dropout set, by config attribute
        full_state = sharding.full_model_state(self.model) if self.sharded else None  # a collective: every rank
        if self.is_main:
            self.publisher.wait()
            checkpoints = self.publisher.complete_checkpoints()
            best = self.publisher.best_step(checkpoints)
            if best is not None:
                self.results["best_checkpoint"] = self.output.child(step_prefix(best))
            if checkpoints:  # the newest complete one, after pruning: status must not name a deleted one
                self.results["latest_checkpoint"] = self.output.child(step_prefix(max(checkpoints)))
            self.export_final(full_state)
            self.output.write_bytes("results.json", json.dumps(self.results, indent=1).encode())
            self.metrics.set_checkpoint("final", self.output.child("final"))
        self.accelerator.wait_for_everyone()
        return self.results

    def export_final(self, full_state: dict[str, torch.Tensor] | None = None) -> None:
        """final/ in Hugging Face format; under FSDP from the consolidated weights gathered to rank 0."""
        model = self.model if self.sharded else self.accelerator.unwrap_model(self.model)
        export_model(model, self.tokenizer, self.spec, self.splits.label_names, self.exported_step, self.staging / "final",
                     self.output, state_dict=full_state)

    # ================================================================== plumbing

    def report_step(self, loss: float, grad_norm: float, tokens: float, samples: float, seconds: float, per_step: float) -> None:
        state, metrics = self.state, self.metrics
        metrics.set(step=state.step, epoch=state.step / self.steps_per_epoch, progress_ratio=state.step / self.total_steps,
                    eta_seconds=per_step * (self.total_steps - state.step), train_loss=loss,
                    learning_rate=self.scheduler.get_last_lr()[0], grad_norm=grad_norm,
                    tokens_per_second=tokens / seconds, samples_per_second=samples / seconds)
        if torch.cuda.is_available():
            metrics.set(gpu_memory_bytes=torch.cuda.max_memory_allocated())
            peak = throughput.peak_flops(torch.cuda.get_device_name(), self.compute_precision)
            if peak:
                metrics.set(mfu_ratio=throughput.mfu(self.flop_counts, tokens, samples, seconds, peak, self.world))

    def install_sigterm_handler(self) -> None:
        """Kubernetes sends SIGTERM on preemption/eviction: finish the step, checkpoint, exit 75."""

        def handler(signum: int, frame: Any) -> None:
            self.stop_requested = True

        self._previous_sigterm = signal.signal(signal.SIGTERM, handler)

    def _progress_bar(self, initial: int) -> Any:
        from tqdm.auto import tqdm

        # Rank 0 only; "auto" shows it on a terminal only (disable=None), so pod logs get one line per event.
        disable = {"always": False, "never": True}.get(self.settings.progress) if self.is_main else True
        return tqdm(total=self.total_steps, initial=initial, desc="training", unit="step",
                    disable=disable, dynamic_ncols=True)

    @staticmethod
    def _fmt(result: dict[str, float]) -> str:
        return ", ".join(f"{k} {v:.4f}" for k, v in result.items())

    def cleanup(self) -> None:
        import shutil

        try:
            if getattr(self, "publisher", None) is not None:
                self.publisher.wait()
        finally:
            if getattr(self, "_previous_sigterm", None) is not None:
                signal.signal(signal.SIGTERM, self._previous_sigterm)
            if getattr(self, "staging", None) is not None:
                shutil.rmtree(self.staging, ignore_errors=True)
            if getattr(self, "own_process_group", False):
                sharding.release_process_group()
