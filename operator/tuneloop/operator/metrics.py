"""The operator's own Prometheus metrics (the trainer exports its own, see scrape.py).

Kept in their own registry so tests can run several operators in one process and read the
numbers without the process-wide default registry getting in the way.
"""

from __future__ import annotations

import functools
import inspect
import time
from typing import Any, Callable, Mapping

import kopf
import prometheus_client as prom

from tuneloop.operator.status import parse_time

REGISTRY = prom.CollectorRegistry(auto_describe=True)

RECONCILES = prom.Counter(
    "tuneloop_operator_reconciles_total", "Handler runs by resource kind, handler and result.",
    ["kind", "handler", "result"], registry=REGISTRY,
)
RECONCILE_SECONDS = prom.Histogram(
    "tuneloop_operator_reconcile_duration_seconds", "Handler run time by resource kind and handler.",
    ["kind", "handler"], registry=REGISTRY,
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
JOBS_BY_PHASE = prom.Gauge(
    "tuneloop_operator_finetunejobs", "FineTuneJobs by phase, as last seen by this operator.",
    ["phase"], registry=REGISTRY,
)
TIME_TO_RUNNING = prom.Histogram(
    "tuneloop_operator_time_to_running_seconds", "From a FineTuneJob's creation to its first Running phase.",
    registry=REGISTRY, buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200),
)
FAILURES = prom.Counter(
    "tuneloop_operator_failures_total", "FineTuneJobs that failed, by reason.", ["reason"], registry=REGISTRY,
)
# One series per FineTuneJob (kube-state-metrics style: 1 for the current phase, the old
# phase's series removed), so dashboards can list jobs and alerts can say which one is stuck.
# The FineTuneJob's name is the `finetunejob` label, not `job`, which Prometheus owns.
JOB_PHASE = prom.Gauge(
    "tuneloop_operator_finetunejob_phase", "1 for each FineTuneJob's current phase.",
    ["namespace", "finetunejob", "phase"], registry=REGISTRY,
)
JOB_ATTEMPTS = prom.Gauge(
    "tuneloop_operator_finetunejob_attempts", "Training attempts each FineTuneJob has started (status.attempts).",
    ["namespace", "finetunejob"], registry=REGISTRY,
)
RESULTS = ("success", "retry", "invalid", "error")
PHASES = ("Pending", "Queued", "Running", "Succeeded", "Failed", "Suspended")

_phase_of: dict[tuple[str, str], str] = {}
for _phase in PHASES:
    JOBS_BY_PHASE.labels(phase=_phase).set(0)


def record_phase(namespace: str, name: str, phase: str | None, attempts: int | None = None) -> None:
    """Count one job under its current phase (None: forget it). Called on every status pass,
    so the gauges are right after a restart too; O(1), they only move on a change."""
    key = (namespace, name)
    if attempts is not None and phase is not None:
        JOB_ATTEMPTS.labels(namespace=namespace, finetunejob=name).set(attempts)
    before = _phase_of.get(key)
    if before == phase:
        return
    if before is not None:
        JOBS_BY_PHASE.labels(phase=before).dec()
        JOB_PHASE.remove(namespace, name, before)
    if phase is None:
        _phase_of.pop(key, None)
        _remove(JOB_ATTEMPTS, namespace, name)
    else:
        _phase_of[key] = phase
        JOBS_BY_PHASE.labels(phase=phase).inc()
        JOB_PHASE.labels(namespace=namespace, finetunejob=name, phase=phase).set(1)


def _remove(gauge: prom.Gauge, *labels: str) -> None:
    try:
        gauge.remove(*labels)
    except KeyError:  # never set: nothing to forget
        pass


def record_transition(old: Mapping[str, Any] | None, new: Mapping[str, Any], created: str | None, now: float) -> None:
    before, after = (old or {}).get("phase"), new.get("phase")
    if after == before:
        return
    if after == "Running" and not (old or {}).get("startTime") and created:
        started = parse_time(created)
        if started is not None:
            TIME_TO_RUNNING.observe(max(0.0, now - started.timestamp()))
    if after == "Failed":
        FAILURES.labels(reason=new.get("reason") or "Unknown").inc()


def instrumented(kind: str, handler: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Count and time a kopf handler; kopf errors count as `retry` or `error`, invalid specs as `invalid`."""

    def result_of(exc: BaseException | None) -> str:
        if exc is None:
            return "success"
        if isinstance(exc, kopf.TemporaryError):
            return "retry"
        if isinstance(exc, kopf.PermanentError) and getattr(exc, "invalid_spec", False):
            return "invalid"
        return "error"

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        # Every result's series exists from the start at 0, so an error rate is 0, not "no data",
        # and `increase()` sees the first error (a series born at 1 shows no increase).
        for result in RESULTS:
            RECONCILES.labels(kind=kind, handler=handler, result=result)

        def finish(started: float, exc: BaseException | None) -> None:
            RECONCILE_SECONDS.labels(kind=kind, handler=handler).observe(time.perf_counter() - started)
            RECONCILES.labels(kind=kind, handler=handler, result=result_of(exc)).inc()

        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as exc:
                    finish(started, exc)
                    raise
                finish(started, None)
                return result
            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                finish(started, exc)
                raise
            finish(started, None)
            return result
        return wrapper

    return decorate


def serve(port: int, addr: str = "0.0.0.0") -> None:
    prom.start_http_server(port, addr=addr, registry=REGISTRY)
