"""The trainer's Prometheus metrics: a stable contract with the operator and with dashboards.

Served on `TUNELOOP_METRICS_PORT` (default 9400, 0 disables) by global rank 0 only; every
series carries the labels `job` and `namespace` (TUNELOOP_JOB_NAME / TUNELOOP_NAMESPACE).
The operator scrapes these to fill `status.progress`, `status.metrics` and
`status.checkpoints`, so the names below are an API: add, never rename.

    tuneloop_trainer_step                          optimizer steps done
    tuneloop_trainer_total_steps                   optimizer steps planned
    tuneloop_trainer_epoch                         fractional epoch
    tuneloop_trainer_progress_ratio                step / total_steps (0..1)
    tuneloop_trainer_eta_seconds                   estimated seconds left
    tuneloop_trainer_train_loss                    mean loss of the last optimizer step
    tuneloop_trainer_eval_loss                     loss of the last evaluation (validation)
    tuneloop_trainer_eval_metric{metric}           last evaluation's metrics (accuracy, macro_f1,
                                                   mse, mae, perplexity, eval_loss)
    tuneloop_trainer_eval_step                     optimizer step of the last evaluation (a search's
                                                   pruner compares trials at the same step)
    tuneloop_trainer_learning_rate                 current learning rate
    tuneloop_trainer_grad_norm                     gradient norm before clipping
    tuneloop_trainer_tokens_per_second             input tokens/s over all ranks
    tuneloop_trainer_samples_per_second            sequences/s over all ranks
    tuneloop_trainer_mfu_ratio                     model FLOPs utilisation (GPU only)
    tuneloop_trainer_gpu_memory_bytes              peak allocated GPU memory of rank 0
    tuneloop_trainer_checkpoint_duration_seconds   histogram: checkpoint write + upload time
    tuneloop_trainer_checkpoint_bytes              size of the last published checkpoint
    tuneloop_trainer_last_checkpoint_timestamp_seconds  Unix time this process last published one
    tuneloop_trainer_checkpoint_info{kind,uri}     1 for the latest, best and final URIs
    tuneloop_trainer_data_rows{split,stage}        rows in/out of cleaning per split
    tuneloop_trainer_data_rows_dropped{reason}     rows dropped by cleaning (all splits)
    tuneloop_trainer_up                            1 while the trainer runs
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Gauge, Histogram, start_http_server

PREFIX = "tuneloop_trainer_"


class TrainerMetrics:
    """All trainer gauges in one private registry (no process/platform collectors mixed in)."""

    def __init__(self, job: str, namespace: str):
        self.registry = CollectorRegistry()
        self.labels = {"job": job, "namespace": namespace}
        base = ["job", "namespace"]

        def gauge(name: str, doc: str, extra: tuple[str, ...] = ()) -> Gauge:
            return Gauge(PREFIX + name, doc, base + list(extra), registry=self.registry)

        self._gauges = {
            name: gauge(name, doc)
            for name, doc in {
                "up": "1 while the trainer process runs.",
                "step": "Optimizer steps done.",
                "total_steps": "Optimizer steps planned.",
                "epoch": "Fractional epoch.",
                "progress_ratio": "Fraction of planned steps done (0..1).",
                "eta_seconds": "Estimated seconds until training ends.",
                "train_loss": "Mean training loss of the last optimizer step.",
                "eval_loss": "Validation loss of the last evaluation.",
                "eval_step": "Optimizer step of the last evaluation (validation).",
                "learning_rate": "Current learning rate.",
                "grad_norm": "Gradient norm before clipping.",
                "tokens_per_second": "Input tokens per second over all ranks.",
                "samples_per_second": "Sequences per second over all ranks.",
                "mfu_ratio": "Estimated model FLOPs utilisation (GPU only).",
                "gpu_memory_bytes": "Peak GPU memory allocated by rank 0.",
                "checkpoint_bytes": "Size of the last published checkpoint.",
                # For the "no checkpoint for too long" alert: `time() - this`.
                "last_checkpoint_timestamp_seconds": "Unix time of the last checkpoint this process published.",
            }.items()
        }
        self.eval_metric = gauge("eval_metric", "Metrics of the last evaluation, by name.", ("metric",))
        self.checkpoint_info = gauge("checkpoint_info", "1 for each checkpoint URI the operator should record.", ("kind", "uri"))
        self.data_rows = gauge("data_rows", "Rows before (stage=in) and after (stage=out) cleaning, per split.", ("split", "stage"))
        self.rows_dropped = gauge("data_rows_dropped", "Rows dropped by cleaning, by reason.", ("reason",))
        self.checkpoint_duration = Histogram(
            PREFIX + "checkpoint_duration_seconds",
            "Seconds to write and upload a checkpoint.",
            base,
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
            registry=self.registry,
        )
        self._uris: dict[str, str] = {}
        self.set(up=1)

    def serve(self, port: int) -> None:
        if port:
            start_http_server(port, registry=self.registry)

    def set(self, **values: float | None) -> None:
        for name, value in values.items():
            if value is not None:
                self._gauges[name].labels(**self.labels).set(value)

    def set_eval(self, metrics: dict[str, float], step: int | None = None) -> None:
        # The step first: a scrape between the two writes pairs new values with the old step
        # at worst never old values with a new step (the operator's pruner reads the pair).
        if step is not None:
            self.set(eval_step=step)
        for name, value in metrics.items():
            self.eval_metric.labels(**self.labels, metric=name).set(value)
        if "eval_loss" in metrics:
            self.set(eval_loss=metrics["eval_loss"])

    def set_checkpoint(self, kind: str, uri: str) -> None:
        """Point `kind` (latest | best | final) at `uri`, dropping the series of the old URI."""
        old = self._uris.get(kind)
        if old == uri:
            return
        if old is not None:
            self.checkpoint_info.remove(self.labels["job"], self.labels["namespace"], kind, old)
        self.checkpoint_info.labels(**self.labels, kind=kind, uri=uri).set(1)
        self._uris[kind] = uri

    def observe_checkpoint(self, seconds: float, size: int) -> None:
        self.checkpoint_duration.labels(**self.labels).observe(seconds)
        self.set(checkpoint_bytes=size, last_checkpoint_timestamp_seconds=time.time())

    def set_data(self, reports: dict[str, "object"]) -> None:
        dropped: dict[str, int] = {}
        for split, report in reports.items():
            self.data_rows.labels(**self.labels, split=split, stage="in").set(report.rows_in)
            self.data_rows.labels(**self.labels, split=split, stage="out").set(report.rows_out)
            for reason, n in report.dropped.items():
                dropped[reason] = dropped.get(reason, 0) + n
        for reason, n in dropped.items():
            self.rows_dropped.labels(**self.labels, reason=reason).set(n)
