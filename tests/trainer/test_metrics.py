"""The trainer's metrics contract: what a checkpoint sets (the dashboard and alerts read these)."""

from __future__ import annotations

import time

from tuneloop.trainer.metrics import TrainerMetrics


def sample(metrics: TrainerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"job": "j", "namespace": "ns", **labels})


def test_a_checkpoint_sets_duration_size_and_its_time() -> None:
    metrics = TrainerMetrics("j", "ns")
    assert sample(metrics, "tuneloop_trainer_last_checkpoint_timestamp_seconds") is None  # none yet: the alert waits
    before = time.time()
    metrics.observe_checkpoint(2.0, 1234)
    assert before <= sample(metrics, "tuneloop_trainer_last_checkpoint_timestamp_seconds") <= time.time()
    assert sample(metrics, "tuneloop_trainer_checkpoint_bytes") == 1234
    assert sample(metrics, "tuneloop_trainer_checkpoint_duration_seconds_count") == 1


def test_an_evaluation_sets_its_metrics_and_its_step() -> None:
    """A search's pruner compares trials at the step of their evaluations (issue 14)."""
    metrics = TrainerMetrics("j", "ns")
    metrics.set_eval({"eval_loss": 0.7, "accuracy": 0.6}, step=20)
    assert sample(metrics, "tuneloop_trainer_eval_step") == 20
    assert sample(metrics, "tuneloop_trainer_eval_metric", metric="accuracy") == 0.6
    assert sample(metrics, "tuneloop_trainer_eval_loss") == 0.7
