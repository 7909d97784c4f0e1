"""Shared by the observability tests: where the dashboard and rules live, their PromQL, and
the metric names the code exports (read from the real registries, not a list kept by hand)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator

import yaml
from prometheus_client.registry import CollectorRegistry

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "observability" / "grafana" / "tuneloop-dashboard.json"
RULES = REPO / "observability" / "prometheus" / "tuneloop-rules.yaml"
RULE_TESTS = REPO / "observability" / "prometheus" / "tests" / "tuneloop-rules.test.yaml"

# Series Prometheus makes itself, for every target.
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
GPU_ONLY = {"tuneloop_trainer_mfu_ratio", "tuneloop_trainer_gpu_memory_bytes"}
_NAME = re.compile(r"\b(tuneloop_[a-z0-9_]+)\b")


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(dash: dict | None = None) -> Iterator[dict]:
    for panel in (dash or dashboard())["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries(dash: dict | None = None) -> list[tuple[str, str]]:
    """(panel title, expr) for every target of every panel."""
    return [(p["title"], t["expr"]) for p in panels(dash) for t in p.get("targets", [])]


def variable_queries(dash: dict | None = None) -> list[tuple[str, str]]:
    return [(v["name"], v["query"]["query"]) for v in (dash or dashboard())["templating"]["list"] if v["type"] == "query"]


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def metric_names(expr: str) -> set[str]:
    return set(_NAME.findall(expr))


def exported_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name a registry can expose, families without samples yet included."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {family.name + suffix for family in registry.collect() for suffix in suffixes[family.type]}


def code_exports() -> set[str]:
    from tuneloop.operator import metrics as operator_metrics
    from tuneloop.operator.policy import metrics as _policy_metrics  # noqa: F401  (registers tuneloop_policy_* in REGISTRY)
    from tuneloop.trainer.metrics import TrainerMetrics

    return exported_names(operator_metrics.REGISTRY) | exported_names(TrainerMetrics("j", "ns").registry)
