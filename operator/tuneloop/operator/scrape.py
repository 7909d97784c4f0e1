"""Progress, metrics and checkpoints read from the trainer: its Prometheus endpoint while it
runs, its final report when it has succeeded.

`parse_trainer_metrics` is pure (exposition text in, status fields out) and parses with
prometheus_client's own parser rather than by hand. `fetch_trainer_metrics` is the only I/O:
one GET with a hard total timeout, so an unreachable pod costs at most that long and never
affects the training itself.

Scrapes are periodic, so the last one often predates the last step, and the test metrics come
after training. On success, rank 0 therefore leaves a final report (one JSON line, see the
trainer's cli.py) as its termination message, which Kubernetes copies into the pod status:
`final_status` (pure) reads it from there. Taking step = totalSteps instead would lie when
early stopping ended the run.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any, Mapping, Sequence

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tuneloop.operator.builders import CONTAINER
from tuneloop.operator.status import parse_time, pod_rank, trainer_terminated

PREFIX = "tuneloop_trainer_"
# Gauge (without prefix) -> status.metrics key; the names the printer columns and Grafana use.
METRIC_KEYS = ("train_loss", "eval_loss", "learning_rate", "grad_norm", "tokens_per_second", "samples_per_second")
CHECKPOINT_KINDS = ("latest", "best", "final")
# How long a completed Job's rank-0 pod may lag behind it in our view before its report is given up on.
REPORT_GRACE_SECONDS = 30.0
# The trainer's exposition is a few KiB. Whoever controls the image controls this endpoint, and
# one unbounded response pushed the operator past its memory limit within seconds (issue 13).
MAX_SCRAPE_BYTES = 1024 * 1024


class ScrapeTooLarge(ValueError):
    pass


def _finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))


def parse_trainer_metrics(text: str, *, job: str | None = None, namespace: str | None = None) -> dict[str, Any]:
    """{"progress": {...}, "metrics": {...}, "checkpoints": {...}}, leaving out what is absent.

    Samples labelled for another job or namespace are ignored (a shared pod IP after a reschedule).
    """
    values: dict[str, float] = {}
    evals: dict[str, float] = {}
    checkpoints: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if job is not None and labels.get("job", job) != job:
                continue
            if namespace is not None and labels.get("namespace", namespace) != namespace:
                continue
            if not sample.name.startswith(PREFIX):
                continue
            name = sample.name[len(PREFIX):]
            if name == "checkpoint_info":
                if sample.value == 1 and labels.get("kind") in CHECKPOINT_KINDS and labels.get("uri"):
                    checkpoints[labels["kind"]] = labels["uri"]
            elif name == "eval_metric" and labels.get("metric") and _finite(sample.value):
                evals[labels["metric"]] = sample.value
            elif _finite(sample.value):
                values[name] = sample.value

    progress: dict[str, Any] = {}
    if "step" in values:
        progress["step"] = int(values["step"])
    if "total_steps" in values:
        progress["totalSteps"] = int(values["total_steps"])
    if "epoch" in values:
        progress["epoch"] = round(values["epoch"], 4)
    if "progress_ratio" in values:
        progress["percent"] = round(100.0 * values["progress_ratio"], 1)
    elif progress.get("totalSteps"):
        progress["percent"] = round(100.0 * progress.get("step", 0) / progress["totalSteps"], 1)
    if "eta_seconds" in values:
        progress["etaSeconds"] = round(values["eta_seconds"])

    metrics = {key: round(values[key], 6) for key in METRIC_KEYS if key in values}
    metrics.update({key: round(value, 6) for key, value in evals.items()})
    found = {"progress": progress, "metrics": metrics, "checkpoints": checkpoints}
    return {key: value for key, value in found.items() if value}


def metrics_url(pods: Sequence[Mapping[str, Any]]) -> str | None:
    """The metrics endpoint of the running rank-0 pod (only rank 0 reports for the whole job)."""
    running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running" and (p.get("status") or {}).get("podIP")]
    running = [p for p in running if pod_rank(p) == 0]
    if not running:
        return None
    pod = max(running, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "")
    port = None
    for container in (pod.get("spec") or {}).get("containers") or ():
        if container.get("name") == CONTAINER:
            port = next((p.get("containerPort") for p in container.get("ports") or () if p.get("name") == "metrics"), None)
    if port is None:
        return None
    ip = pod["status"]["podIP"]
    host = f"[{ip}]" if ":" in ip else ip  # an IPv6 pod IP needs brackets in a URL (RFC 3986)
    return f"http://{host}:{port}/metrics"


def merge_scrape(current: Mapping[str, Any] | None, scraped: Mapping[str, Any]) -> dict[str, Any]:
    """The status patch for a scrape: only sections whose values moved."""
    current = current or {}
    patch: dict[str, Any] = {}
    for section, values in scraped.items():
        before = current.get(section) or {}
        changed = {k: v for k, v in values.items() if before.get(k) != v}
        if changed:
            patch[section] = changed
    return patch


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and _finite(float(value))


def parse_final_report(message: str | None) -> dict[str, Any]:
    """The trainer's final report as status sections {"progress", "metrics", "checkpoints"};
    {} for any other message (an older trainer, a log tail, JSON cut at 4096 bytes).

    Progress is complete: the run is over, whether at totalSteps or earlier (early stopping).
    """
    try:
        report = json.loads(message or "")
    except ValueError:
        return {}
    if not isinstance(report, dict):
        return {}
    found: dict[str, Any] = {}
    step, total = report.get("step"), report.get("totalSteps")
    if all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (step, total)):
        found["progress"] = {"step": step, "totalSteps": total, "percent": 100.0, "etaSeconds": 0}
        if _number(report.get("epoch")):
            found["progress"]["epoch"] = round(float(report["epoch"]), 4)
    metrics = report.get("metrics")
    if isinstance(metrics, dict):
        found["metrics"] = {k: round(float(v), 6) for k, v in metrics.items() if isinstance(k, str) and _number(v)}
    checkpoints = report.get("checkpoints")
    if isinstance(checkpoints, dict):
        found["checkpoints"] = {k: v for k, v in checkpoints.items() if k in ("latest", "best", "final") and isinstance(v, str) and v}
    return {key: value for key, value in found.items() if value}


def _succeeded_rank0(pods: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    done = [p for p in pods if (p.get("status") or {}).get("phase") == "Succeeded" and pod_rank(p) == 0]
    return max(done, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "", default=None)


def final_report_pending(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], now: datetime,
                         grace: float = REPORT_GRACE_SECONDS) -> bool:
    """The Job completed moments ago but its rank-0 pod has not caught up in our view yet.

    Jobs and pods come by separate watches; past `grace` the report is given up on.
    """
    if _succeeded_rank0(pods) is not None:
        return False
    if not any((p.get("status") or {}).get("phase") in ("Pending", "Running") for p in pods if pod_rank(p) == 0):
        return False
    status = job.get("status") or {}
    complete = next((c for c in status.get("conditions") or () if c.get("type") == "Complete" and c.get("status") == "True"), {})
    done = parse_time(complete.get("lastTransitionTime") or status.get("completionTime"))
    return done is not None and (now - done).total_seconds() < grace


def final_status(current: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]], output_uri: str) -> dict[str, Any]:
    """progress, metrics and checkpoints of a Succeeded job: the final report's values win over
    the last scrape's; without a report, progress stays as scraped and checkpoints.final is
    `<output_uri>/final/` (where the trainer always exports the model)."""
    current = current or {}
    pod = _succeeded_rank0(pods)
    report = parse_final_report(trainer_terminated(pod).get("message")) if pod is not None else {}
    checkpoints = dict(current.get("checkpoints") or {})
    if "final" not in checkpoints:
        checkpoints["final"] = output_uri.rstrip("/") + "/final/"
    new: dict[str, Any] = {"checkpoints": {**checkpoints, **report.get("checkpoints", {})}}
    for section in ("progress", "metrics"):
        if section in report:
            new[section] = {**(current.get(section) or {}), **report[section]}
    return new


async def fetch_trainer_metrics(url: str, timeout: float = 3.0, limit: int = MAX_SCRAPE_BYTES) -> str:
    """GET the exposition text, at most `limit` bytes; raises on any network problem or a
    larger body (the caller shrugs and moves on). Never holds more than `limit` + one chunk."""
    limits = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 1.0))
    async with aiohttp.ClientSession(timeout=limits) as session:
        async with session.get(url) as response:
            response.raise_for_status()
            if response.content_length is not None and response.content_length > limit:
                raise ScrapeTooLarge(f"{url} announces {response.content_length} bytes; the limit is {limit}")
            body = bytearray()
            while chunk := await response.content.read(64 * 1024):
                body += chunk
                if len(body) > limit:
                    raise ScrapeTooLarge(f"{url} sent more than {limit} bytes")
            return body.decode(response.get_encoding() if response.charset else "utf-8", errors="replace")
