"""The trainer's metrics exposition -> status.progress / metrics / checkpoints."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tuneloop.operator.scrape import (
    final_report_pending,
    final_status,
    merge_scrape,
    metrics_url,
    parse_final_report,
    parse_trainer_metrics,
)

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


def test_metrics_url_brackets_an_ipv6_pod_ip() -> None:
    assert metrics_url([_pod("Running", "fd00:10::5", 0)]) == "http://[fd00:10::5]:9400/metrics"
    assert metrics_url([_pod("Pending", None, 0)]) is None
    assert metrics_url([_pod("Running", "10.0.0.2", 1)]) is None
    assert metrics_url([_pod("Running", "127.0.0.1", 0, port=19400)]) == "http://127.0.0.1:19400/metrics"


# --- the final report: rank 0's termination message on success ---------------------------------

REPORT = ('{"step":20,"totalSteps":20,"epoch":2.5,"metrics":{"train_loss":0.41,"eval_loss":0.52,"accuracy":0.9,'
          '"macro_f1":0.88},"checkpoints":{"final":"s3://o/run/final/","best":"s3://o/run/checkpoints/step-00000010"}}')
EARLY = '{"step":6,"totalSteps":40,"epoch":0.3,"metrics":{"accuracy":0.5},"checkpoints":{"final":"s3://o/run/final/"}}'
# What the last scrape left: a few steps short, validation accuracy, the live-only gauges.
SCRAPED = {"progress": {"step": 18, "totalSteps": 20, "epoch": 2.25, "percent": 90.0, "etaSeconds": 3},
           "metrics": {"train_loss": 0.45, "accuracy": 0.8, "learning_rate": 1e-5},
           "checkpoints": {"latest": "s3://o/run/checkpoints/step-00000015"}}
FALLBACK = {"final": "s3://o/run/final/", "latest": "s3://o/run/checkpoints/step-00000015"}


def trainer_pod(phase: str, message: str | None = None, *, rank: int = 0, created: str = "2025-01-01T11:00:00Z") -> dict:
    state = {"terminated": {"exitCode": 0, "reason": "Completed", "message": message}} if message is not None else {}
    return {"metadata": {"name": f"run-{rank}", "creationTimestamp": created,
                         "annotations": {"batch.kubernetes.io/job-completion-index": str(rank)}},
            "status": {"phase": phase, "containerStatuses": [{"name": "trainer", "state": state}]}}


# (id, pods, expected status sections: None = unchanged from SCRAPED)
FINAL_CASES = [
    ("report", [trainer_pod("Succeeded", REPORT)], {
        "progress": {"step": 20, "totalSteps": 20, "epoch": 2.5, "percent": 100.0, "etaSeconds": 0},
        "metrics": {"train_loss": 0.41, "eval_loss": 0.52, "accuracy": 0.9, "macro_f1": 0.88, "learning_rate": 1e-5},
        "checkpoints": {**FALLBACK, "best": "s3://o/run/checkpoints/step-00000010"},
    }),
    # Early stopping: the report's step, not totalSteps; done all the same.
    ("early stopped", [trainer_pod("Succeeded", EARLY)], {
        "progress": {"step": 6, "totalSteps": 40, "epoch": 0.3, "percent": 100.0, "etaSeconds": 0},
        "metrics": {**SCRAPED["metrics"], "accuracy": 0.5},
        "checkpoints": FALLBACK,
    }),
    # The report's newest checkpoint replaces a stale scraped one (pruned since that scrape).
    ("report names the newest checkpoint", [trainer_pod("Succeeded", EARLY.replace(
        '"checkpoints":{', '"checkpoints":{"latest":"s3://o/run/checkpoints/step-00000006",'))], {
        "progress": {"step": 6, "totalSteps": 40, "epoch": 0.3, "percent": 100.0, "etaSeconds": 0},
        "metrics": {**SCRAPED["metrics"], "accuracy": 0.5},
        "checkpoints": {**FALLBACK, "latest": "s3://o/run/checkpoints/step-00000006"},
    }),
    ("no report (older trainer)", [trainer_pod("Succeeded", "")], {"progress": None, "metrics": None, "checkpoints": FALLBACK}),
    ("no pods left", [], {"progress": None, "metrics": None, "checkpoints": FALLBACK}),
    ("garbage", [trainer_pod("Succeeded", "done!\nbye")], {"progress": None, "metrics": None, "checkpoints": FALLBACK}),
    ("json, not a report", [trainer_pod("Succeeded", "[1, 2]")], {"progress": None, "metrics": None, "checkpoints": FALLBACK}),
    # Kubernetes keeps 4096 bytes: an oversized message arrives cut, so it is no JSON at all.
    ("oversized, cut at 4096", [trainer_pod("Succeeded", (REPORT[:-2] + ',"x":"' + "y" * 5000 + '"}}')[:4096])],
     {"progress": None, "metrics": None, "checkpoints": FALLBACK}),
    # Wrong types are dropped one by one; what is sound still counts.
    ("bad fields", [trainer_pod("Succeeded", '{"step":"20","totalSteps":20,"metrics":{"accuracy":"high","f1":true,'
                                             '"mse":0.25},"checkpoints":{"final":7,"other":"s3://x"}}')],
     {"progress": None, "metrics": {**SCRAPED["metrics"], "mse": 0.25}, "checkpoints": FALLBACK}),
    # Rank 0 only, its newest Succeeded pod; a failed earlier attempt's message does not count.
    ("rank 0, newest", [trainer_pod("Failed", "tuneloop-train: error: x", created="2025-01-01T10:00:00Z"),
                        trainer_pod("Succeeded", EARLY, created="2025-01-01T10:30:00Z"),
                        trainer_pod("Succeeded", REPORT, created="2025-01-01T11:00:00Z"),
                        trainer_pod("Succeeded", "", rank=1, created="2025-01-01T11:30:00Z")],
     {"progress": {"step": 20, "totalSteps": 20, "epoch": 2.5, "percent": 100.0, "etaSeconds": 0}}),
]


@pytest.mark.parametrize("pods, expected", [c[1:] for c in FINAL_CASES], ids=[c[0] for c in FINAL_CASES])
def test_final_status(pods: list, expected: dict) -> None:
    new = final_status(SCRAPED, pods, "s3://o/run")
    for section, want in expected.items():
        assert new.get(section, SCRAPED[section]) == (SCRAPED[section] if want is None else want), section


def test_final_status_without_any_scrape_and_with_a_scraped_final() -> None:
    assert final_status(None, [], "s3://o/run/") == {"checkpoints": {"final": "s3://o/run/final/"}}
    assert final_status({"checkpoints": {"final": "s3://o/run/final"}}, [], "s3://o/run")["checkpoints"] == {"final": "s3://o/run/final"}


@pytest.mark.parametrize("message", [None, "", "not json", "null", "42", '"text"', '{"step": 1'], ids=repr)
def test_parse_final_report_ignores_anything_else(message: str | None) -> None:
    assert parse_final_report(message) == {}


NOW = datetime(2025, 1, 1, 12, 0, 10, tzinfo=timezone.utc)


def complete_job(at: str | None = "2025-01-01T12:00:00Z", completion: str | None = None) -> dict:
    conditions = [{"type": "Complete", "status": "True", "lastTransitionTime": at}] if at else []
    return {"status": {"conditions": conditions, **({"completionTime": completion} if completion else {})}}


@pytest.mark.parametrize("job, pods, pending", [
    (complete_job(), [trainer_pod("Running")], True),  # the Job's Complete arrived before the pod's Succeeded
    (complete_job(at=None, completion="2025-01-01T12:00:05Z"), [trainer_pod("Pending")], True),
    (complete_job(at="2025-01-01T11:59:00Z"), [trainer_pod("Running")], False),  # waited long enough: give up
    (complete_job(at=None), [trainer_pod("Running")], False),
    (complete_job(), [trainer_pod("Running"), trainer_pod("Succeeded", REPORT, created="2025-01-01T12:00:00Z")], False),
    (complete_job(), [trainer_pod("Succeeded", REPORT)], False),
    (complete_job(), [trainer_pod("Running", rank=1)], False),
    (complete_job(), [], False),
], ids=["lagging pod", "lagging, completionTime", "past the grace", "no time", "newer pod done", "done", "rank 1", "no pods"])
def test_final_report_pending(job: dict, pods: list, pending: bool) -> None:
    assert final_report_pending(job, pods, NOW) is pending
