"""The trainer's metrics exposition -> status.progress / metrics / checkpoints."""

from __future__ import annotations

from tuneloop.operator.scrape import merge_scrape, metrics_url, parse_trainer_metrics

EXPOSITION = """\
# HELP tuneloop_trainer_step Optimizer steps done.
# TYPE tuneloop_trainer_step gauge
tuneloop_trainer_step{job="sft",namespace="ml"} 120.0
# TYPE tuneloop_trainer_total_steps gauge
tuneloop_trainer_total_steps{job="sft",namespace="ml"} 480.0
# TYPE tuneloop_trainer_epoch gauge
tuneloop_trainer_epoch{job="sft",namespace="ml"} 0.25
# TYPE tuneloop_trainer_progress_ratio gauge
tuneloop_trainer_progress_ratio{job="sft",namespace="ml"} 0.25
# TYPE tuneloop_trainer_eta_seconds gauge
tuneloop_trainer_eta_seconds{job="sft",namespace="ml"} 901.6
# TYPE tuneloop_trainer_train_loss gauge
tuneloop_trainer_train_loss{job="sft",namespace="ml"} 1.234
# TYPE tuneloop_trainer_eval_loss gauge
tuneloop_trainer_eval_loss{job="sft",namespace="ml"} NaN
# TYPE tuneloop_trainer_eval_metric gauge
tuneloop_trainer_eval_metric{job="sft",namespace="ml",metric="accuracy"} 0.91
# TYPE tuneloop_trainer_learning_rate gauge
tuneloop_trainer_learning_rate{job="sft",namespace="ml"} 2e-05
# TYPE tuneloop_trainer_tokens_per_second gauge
tuneloop_trainer_tokens_per_second{job="sft",namespace="ml"} 5120.0
# TYPE tuneloop_trainer_checkpoint_info gauge
tuneloop_trainer_checkpoint_info{job="sft",namespace="ml",kind="latest",uri="s3://o/sft/checkpoints/step-00000100/"} 1.0
tuneloop_trainer_checkpoint_info{job="sft",namespace="ml",kind="best",uri="s3://o/sft/checkpoints/step-00000050/"} 1.0
# TYPE tuneloop_trainer_step_other gauge
tuneloop_trainer_step{job="other",namespace="ml"} 999.0
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 10.0
"""


def test_parse_trainer_metrics() -> None:
    parsed = parse_trainer_metrics(EXPOSITION, job="sft", namespace="ml")
    assert parsed["progress"] == {"step": 120, "totalSteps": 480, "epoch": 0.25, "percent": 25.0, "etaSeconds": 902}
    assert parsed["metrics"] == {"train_loss": 1.234, "learning_rate": 2e-05, "tokens_per_second": 5120.0, "accuracy": 0.91}
    assert parsed["checkpoints"] == {"latest": "s3://o/sft/checkpoints/step-00000100/",
                                     "best": "s3://o/sft/checkpoints/step-00000050/"}


def test_parse_empty_and_merge() -> None:
    assert parse_trainer_metrics("") == {}
    current = {"progress": {"step": 120, "totalSteps": 480}, "metrics": {"train_loss": 1.234}}
    scraped = {"progress": {"step": 121, "totalSteps": 480}, "metrics": {"train_loss": 1.234}}
    assert merge_scrape(current, scraped) == {"progress": {"step": 121}}
    assert merge_scrape(current, {"progress": {"step": 120}}) == {}


def _pod(phase: str, ip: str | None, rank: int, port: int = 9400) -> dict:
    return {"metadata": {"name": f"p{rank}", "annotations": {"batch.kubernetes.io/job-completion-index": str(rank)}},
            "spec": {"containers": [{"name": "trainer", "ports": [{"name": "metrics", "containerPort": port}]}]},
            "status": {"phase": phase, "podIP": ip}}


def test_metrics_url_is_rank_zero() -> None:
    assert metrics_url([_pod("Running", "10.0.0.2", 1), _pod("Running", "10.0.0.1", 0)]) == "http://10.0.0.1:9400/metrics"
    assert metrics_url([_pod("Pending", None, 0)]) is None
    assert metrics_url([_pod("Running", "10.0.0.2", 1)]) is None
    assert metrics_url([_pod("Running", "127.0.0.1", 0, port=19400)]) == "http://127.0.0.1:19400/metrics"
