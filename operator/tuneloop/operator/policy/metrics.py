"""MaintenancePolicy metrics (names agreed with observability, issue 12), labels namespace and policy.

In the operator's registry (`tuneloop.operator.metrics.REGISTRY`), served on its port.
Gauges are set from the status each pass writes, so they are right after a restart too;
counters count what this process did (Prometheus' rate() handles the reset).
"""

from __future__ import annotations

from typing import Any, Mapping

import prometheus_client as prom

from tuneloop.operator.metrics import REGISTRY
from tuneloop.operator.policy.decide import CONDITION_TYPES, TRIGGER_ORDER
from tuneloop.operator.status import parse_time

LABELS = ["namespace", "policy"]
WATCHED = prom.Gauge("tuneloop_policy_watched_value", "The metric trigger's latest value (Prometheus or the champion's evaluation).",
                     LABELS, registry=REGISTRY)
THRESHOLD = prom.Gauge("tuneloop_policy_threshold", "The metric trigger's threshold.", LABELS, registry=REGISTRY)
RETRAINS = prom.Counter("tuneloop_policy_retrains_total", "Retraining runs started, by trigger.", LABELS + ["trigger"],
                        registry=REGISTRY)
PROMOTIONS = prom.Counter("tuneloop_policy_promotions_total", "Challengers promoted to champion.", LABELS, registry=REGISTRY)
REJECTIONS = prom.Counter("tuneloop_policy_rejections_total", "Challengers rejected by the promotion gate.", LABELS,
                          registry=REGISTRY)
CHAMPION = prom.Gauge("tuneloop_policy_champion_revision", "Revision number N of the champion (0: adopted).", LABELS,
                      registry=REGISTRY)
LAST_RETRAIN = prom.Gauge("tuneloop_policy_last_retrain_timestamp_seconds",
                          "When the last successful retrain finished (Unix time); dashboards show its age.", LABELS,
                          registry=REGISTRY)
CONDITION = prom.Gauge("tuneloop_policy_condition", "1 if the policy's condition is True, else 0.", LABELS + ["type"],
                       registry=REGISTRY)
GAUGES = (WATCHED, THRESHOLD, CHAMPION, LAST_RETRAIN)


def record(namespace: str, policy: str, status: Mapping[str, Any], threshold: float | None, *,
           retrained: str | None = None, promoted: int = 0, rejected: int = 0) -> None:
    labels = {"namespace": namespace, "policy": policy}
    if retrained:
        RETRAINS.labels(**labels, trigger=retrained).inc()
    if promoted:
        PROMOTIONS.labels(**labels).inc(promoted)
    if rejected:
        REJECTIONS.labels(**labels).inc(rejected)
    PROMOTIONS.labels(**labels)  # exported at 0 from the start, so rate() works from the first promotion
    REJECTIONS.labels(**labels)
    watch = status.get("metricWatch") or {}
    last = status.get("lastEvaluation") or {}
    value = watch.get("value") if watch.get("value") is not None else last.get("value")
    _set(WATCHED, labels, value)
    _set(THRESHOLD, labels, threshold)
    champion = (status.get("champion") or {}).get("revision")
    _set(CHAMPION, labels, int(champion[1:]) if champion else None)
    trained = [parse_time(h.get("trainedAt")) for h in status.get("history") or () if h.get("trainedAt")]
    trained = [t for t in trained if t is not None]
    if trained:
        LAST_RETRAIN.labels(**labels).set(max(trained).timestamp())
    for cond in status.get("conditions") or ():
        if cond.get("type") in CONDITION_TYPES:
            CONDITION.labels(**labels, type=cond["type"]).set(1 if cond.get("status") == "True" else 0)


def _set(gauge: prom.Gauge, labels: Mapping[str, str], value: float | None) -> None:
    if value is None:
        try:
            gauge.remove(*labels.values())
        except KeyError:
            pass
    else:
        gauge.labels(**labels).set(float(value))


def forget(namespace: str, policy: str) -> None:
    for metric in (*GAUGES, PROMOTIONS, REJECTIONS):
        try:
            metric.remove(namespace, policy)
        except KeyError:
            pass
    for metric, values in ((CONDITION, CONDITION_TYPES), (RETRAINS, TRIGGER_ORDER)):
        for value in values:
            try:
                metric.remove(namespace, policy, value)
            except KeyError:
                pass
