"""The policy's operator metrics, set from the status a pass writes."""

from __future__ import annotations

from prometheus_client import generate_latest

from tuneloop.operator.metrics import REGISTRY
from tuneloop.operator.policy import metrics


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_gauges_follow_the_status_and_counters_count_actions() -> None:
    status = {
        "metricWatch": {"value": None, "breachedSince": None},  # source: evaluation keeps no value of its own
        "lastEvaluation": {"value": 0.71, "revision": "r2"},
        "champion": {"revision": "r2"},
        "history": [{"revision": "r1", "trainedAt": "2026-03-02T10:00:00Z"}, {"revision": "r2", "trainedAt": "2026-03-02T11:00:00Z"},
                    {"revision": "r3", "verdict": "Training"}],
        "conditions": [{"type": "Ready", "status": "True"}, {"type": "Degraded", "status": "True"},
                       {"type": "Retraining", "status": "True"}, {"type": "Stalled", "status": "False"}],
    }
    labels = {"namespace": "ml", "policy": "m1"}
    metrics.record("ml", "m1", status, 0.8, retrained="metric", rejected=1)
    assert sample("tuneloop_policy_watched_value", **labels) == 0.71
    assert sample("tuneloop_policy_threshold", **labels) == 0.8
    assert sample("tuneloop_policy_champion_revision", **labels) == 2
    assert sample("tuneloop_policy_last_retrain_timestamp_seconds", **labels) == 1772449200.0  # 11:00Z, the newest trained
    assert sample("tuneloop_policy_condition", **labels, type="Degraded") == 1
    assert sample("tuneloop_policy_condition", **labels, type="Stalled") == 0
    assert sample("tuneloop_policy_retrains_total", **labels, trigger="metric") == 1
    assert sample("tuneloop_policy_rejections_total", **labels) == 1
    assert sample("tuneloop_policy_promotions_total", **labels) == 0  # exported before the first one
    metrics.record("ml", "m1", {**status, "metricWatch": {"value": 0.5}}, None, promoted=1)
    assert sample("tuneloop_policy_watched_value", **labels) == 0.5  # Prometheus' reading wins
    assert sample("tuneloop_policy_threshold", **labels) is None  # no metric trigger: no threshold series
    assert sample("tuneloop_policy_promotions_total", **labels) == 1
    metrics.forget("ml", "m1")
    assert 'policy="m1"' not in generate_latest(REGISTRY).decode()
