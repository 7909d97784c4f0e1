"""The operator's own metrics: handler counts and timings, jobs by phase, failures, time to Running."""

from __future__ import annotations

import asyncio

import kopf
import pytest

from tuneloop.operator import metrics


def value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def test_instrumented_counts_results_and_times_sync_and_async_handlers() -> None:
    @metrics.instrumented("FineTuneJob", "t-sync")
    def sync_handler(fail: BaseException | None = None) -> str:
        if fail:
            raise fail
        return "ok"

    @metrics.instrumented("FineTuneJob", "t-async")
    async def async_handler() -> str:
        return "ok"

    assert sync_handler() == "ok"
    with pytest.raises(kopf.TemporaryError):
        sync_handler(kopf.TemporaryError("later"))
    invalid = kopf.PermanentError("bad")
    invalid.invalid_spec = True  # type: ignore[attr-defined]
    with pytest.raises(kopf.PermanentError):
        sync_handler(invalid)
    with pytest.raises(RuntimeError):
        sync_handler(RuntimeError("bug"))
    assert asyncio.run(async_handler()) == "ok"

    for result in ("success", "retry", "invalid", "error"):
        assert value("tuneloop_operator_reconciles_total", kind="FineTuneJob", handler="t-sync", result=result) == 1
    assert value("tuneloop_operator_reconciles_total", kind="FineTuneJob", handler="t-async", result="success") == 1
    assert value("tuneloop_operator_reconcile_duration_seconds_count", kind="FineTuneJob", handler="t-sync") == 4


def test_phase_gauge_moves_with_each_job() -> None:
    before = {p: value("tuneloop_operator_finetunejobs", phase=p) for p in metrics.PHASES}
    metrics.record_phase("ns", "a", "Pending")
    metrics.record_phase("ns", "b", "Pending")
    metrics.record_phase("ns", "a", "Running")
    metrics.record_phase("ns", "a", "Running")
    assert value("tuneloop_operator_finetunejobs", phase="Pending") - before["Pending"] == 1
    assert value("tuneloop_operator_finetunejobs", phase="Running") - before["Running"] == 1
    metrics.record_phase("ns", "a", None)
    metrics.record_phase("ns", "b", None)
    assert {p: value("tuneloop_operator_finetunejobs", phase=p) for p in metrics.PHASES} == before


def test_transitions_record_failures_and_time_to_running() -> None:
    count = value("tuneloop_operator_time_to_running_seconds_count")
    total = value("tuneloop_operator_time_to_running_seconds_sum")
    created = "2025-01-01T00:00:00Z"
    started = 1735689600.0 + 42  # created + 42 s
    metrics.record_transition({"phase": "Pending"}, {"phase": "Running"}, created, started)
    metrics.record_transition({"phase": "Running"}, {"phase": "Running"}, created, started + 5)
    assert value("tuneloop_operator_time_to_running_seconds_count") == count + 1
    assert value("tuneloop_operator_time_to_running_seconds_sum") == pytest.approx(total + 42)

    failures = value("tuneloop_operator_failures_total", reason="OOMKilled-test")
    metrics.record_transition({"phase": "Running"}, {"phase": "Failed", "reason": "OOMKilled-test"}, created, started)
    assert value("tuneloop_operator_failures_total", reason="OOMKilled-test") == failures + 1


def test_per_job_phase_and_attempts_follow_each_job_and_are_forgotten_on_delete() -> None:
    def phases(name: str) -> dict[str, float]:
        return {p: v for p in metrics.PHASES
                if (v := metrics.REGISTRY.get_sample_value("tuneloop_operator_finetunejob_phase",
                                                           {"namespace": "ns2", "finetunejob": name, "phase": p})) is not None}

    metrics.record_phase("ns2", "c", "Pending")
    assert phases("c") == {"Pending": 1}
    metrics.record_phase("ns2", "c", "Running", attempts=1)
    metrics.record_phase("ns2", "c", "Running", attempts=2)
    assert phases("c") == {"Running": 1}  # the old phase's series is gone, so `for:` clauses reset
    assert value("tuneloop_operator_finetunejob_attempts", namespace="ns2", finetunejob="c") == 2
    metrics.record_phase("ns2", "c", None)
    assert phases("c") == {}
    assert metrics.REGISTRY.get_sample_value("tuneloop_operator_finetunejob_attempts", {"namespace": "ns2", "finetunejob": "c"}) is None
    metrics.record_phase("ns2", "never-ran", "Pending")
    metrics.record_phase("ns2", "never-ran", None)  # no attempts series to forget: no error


def test_every_result_of_a_handler_is_a_series_from_the_start() -> None:
    @metrics.instrumented("FineTuneJob", "t-fresh")
    def handler() -> None:
        pass

    for result in metrics.RESULTS:
        assert metrics.REGISTRY.get_sample_value("tuneloop_operator_reconciles_total",
                                                 {"kind": "FineTuneJob", "handler": "t-fresh", "result": result}) == 0


def test_a_deleted_finetunejob_is_forgotten_on_its_deleted_event() -> None:
    """Issue 9: without a kopf finalizer (finished jobs), only the DELETED event is seen."""
    import kopf

    from tuneloop.operator import handlers, metrics

    body = kopf.Body({"metadata": {"name": "gone", "namespace": "ml", "uid": "u-gone"}})
    memo = kopf.Memo(written={"u-gone": {"phase": "Succeeded"}}, parsed={"u-gone": (1, None)})
    metrics.record_phase("ml", "gone", "Succeeded")
    # kopf calls it only for the DELETED event (its `when` filter, see test_handler_filters.py).
    handlers.forget_deleted(type="DELETED", body=body, memo=memo)
    assert memo.written == {} and memo.parsed == {}
    assert ("ml", "gone") not in metrics._phase_of
