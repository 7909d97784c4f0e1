"""Which handlers kopf runs for which FineTuneJob: their `when` filters, read from kopf's own
registry. At 1,000 jobs every handler kopf runs per watch event or per restart is a cost paid
1,000 times (issue 15, bench/operator_scale.py), so what finished jobs trigger is pinned here.
"""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from tuneloop.operator import handlers

SUCCEEDED = {"phase": "Succeeded", "reason": "Completed"}
RUNNING = {"phase": "Running", "reason": "Training"}


def registered(handler_id: str) -> Any:
    registry = kopf.get_default_registry()
    for sub in (registry._watching, registry._changing, registry._spawning):
        for handler in sub.get_all_handlers():
            if handler.id == handler_id:
                return handler
    raise LookupError(handler_id)


def runs(handler_id: str, **kwargs: Any) -> bool:
    """Whether kopf would call the handler, by its `when` filter, for an object like this."""
    handler = registered(handler_id)
    return handler.when is None or bool(handler.when(**{"spec": {}, "status": {}, "type": None, **kwargs}))


@pytest.mark.parametrize("event, expected", [("ADDED", False), ("MODIFIED", False), (None, False), ("DELETED", True)])
def test_forget_deleted_runs_only_for_the_deleted_event(event: str | None, expected: bool) -> None:
    assert runs("forget-deleted", type=event) is expected


@pytest.mark.parametrize("status, expected", [({}, False), (RUNNING, True), (SUCCEEDED, False)])
def test_the_status_timer_runs_only_while_a_job_is_active(status: dict, expected: bool) -> None:
    assert runs("status", status=status) is expected


def test_a_restart_resumes_a_finished_job_without_parsing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only its phase gauge is set again; its spec is not parsed and nothing is looked up."""
    from tuneloop.operator import metrics
    from tuneloop.operator.config import OperatorConfig

    parsed: list[str] = []
    monkeypatch.setattr(handlers, "parse", lambda spec, name, *args: parsed.append(name) or (None, []))
    body = kopf.Body({"metadata": {"name": "done", "namespace": "ml", "uid": "u-done", "generation": 1}})
    memo = kopf.Memo(config=OperatorConfig(), written={}, parsed={})
    handlers.reconcile(body=body, spec={}, status=SUCCEEDED, name="done", namespace="ml", uid="u-done", patch=kopf.Patch(),
                       memo=memo, trainer_jobs=None, trainer_pods=None, old=None, new=None, reason="resume")
    assert parsed == [] and memo.written == {}
    assert metrics._phase_of[("ml", "done")] == "Succeeded"
