"""Argo CD's health checks for Tuneloop's kinds, run as Argo CD runs them: the Lua file as
the body of a function of `obj`, in Lua 5.1 (Argo CD's gopher-lua speaks 5.1), through lupa.

FineTuneJob statuses are not made up: they come from the operator's own `derive_status`
over every row of the status table in tests/operator/test_status.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51

from tuneloop.operator.status import derive_status

REPO = Path(__file__).resolve().parents[2]
ARGOCD = REPO / "observability" / "argocd"
KEYS = {"FineTuneJob": "resource.customizations.health.tuneloop.dev_FineTuneJob",
        "MaintenancePolicy": "resource.customizations.health.tuneloop.dev_MaintenancePolicy"}
SCRIPTS = {"FineTuneJob": ARGOCD / "finetunejob-health.lua", "MaintenancePolicy": ARGOCD / "maintenancepolicy-health.lua"}


def load_status_table() -> Any:
    # By path: a folder named `operator` cannot be imported as a package (it is the stdlib's).
    spec = importlib.util.spec_from_file_location("status_table", REPO / "tests" / "operator" / "test_status.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


STATUS = load_status_table()


def health(kind: str, obj: dict) -> tuple[str, str]:
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    check = lua.eval("function(obj)\n" + SCRIPTS[kind].read_text() + "\nend")
    result = check(lua.table_from(obj, recursive=True))
    return result["status"], result["message"]


# Every row of the operator's status table, and what Argo CD should show for it.
FTJ_HEALTH = {
    "no job yet": "Progressing", "job created, pods starting": "Progressing", "running": "Progressing",
    "multi-node partly running": "Progressing", "retrying after OOM": "Progressing", "succeeded": "Healthy",
    "deadline exceeded": "Degraded", "backoff limit, OOM": "Degraded", "backoff limit, exit 1": "Degraded",
    "bad input: exit 2": "Degraded", "GPU out of memory: exit 3": "Degraded",
    "failure target is not final yet": "Progressing", "success criteria met keeps it running": "Progressing",
    "a terminating pod is not training": "Progressing", "previous job's pods still running": "Progressing",
    "missing secret can never start": "Degraded", "job that creates no pod": "Degraded",  # Stalled: they will not start
    "multi-node rank failed: group restart": "Progressing", "multi-node job being replaced": "Progressing",
    "multi-node bad input is final": "Degraded", "multi-node out of retries": "Degraded",
    "image pull backoff": "Degraded", "unschedulable too long": "Degraded",  # Pending, but Stalled: it will not start
    "unschedulable briefly": "Progressing", "queued in kueue": "Progressing", "suspended": "Suspended",
    "suspending": "Suspended", "resuming": "Progressing", "evicted then retried": "Progressing",
}


def test_every_status_table_row_has_an_expected_health():
    assert {case[0] for case in STATUS.CASES} == set(FTJ_HEALTH)


@pytest.mark.parametrize("case", STATUS.CASES, ids=[c[0] for c in STATUS.CASES])
def test_finetunejob_health_of_every_status_the_operator_writes(case: tuple) -> None:
    name, job, pods, overrides, phase, reason, fragment, _ = case
    status = derive_status(job, pods, spec=STATUS.spec(**overrides), generation=3, previous={}, now=STATUS.NOW)
    got, message = health("FineTuneJob", {"metadata": {"name": "ft", "generation": 3}, "status": status})
    assert got == FTJ_HEALTH[name]
    assert fragment in message  # the operator's own words reach the Argo CD UI


def test_finetunejob_invalid_spec_is_degraded_with_the_field_to_fix():
    problems = [STATUS.Problem("spec.output.uri", "scheme 'gs' is not supported; use s3://bucket/prefix")]
    status = derive_status(None, [], spec=None, problems=problems, generation=1, previous={}, now=STATUS.NOW)
    got, message = health("FineTuneJob", {"metadata": {"generation": 1}, "status": status})
    assert got == "Degraded" and "InvalidSpec" in message and "spec.output.uri" in message


def test_finetunejob_without_status_or_with_an_unobserved_spec_is_progressing():
    assert health("FineTuneJob", {"metadata": {"generation": 1}})[0] == "Progressing"
    succeeded = {"phase": "Succeeded", "observedGeneration": 1, "message": "done"}
    assert health("FineTuneJob", {"metadata": {"generation": 1}, "status": succeeded})[0] == "Healthy"
    got, message = health("FineTuneJob", {"metadata": {"generation": 2}, "status": succeeded})
    assert got == "Progressing" and "generation 2" in message


def cond(type_: str, status: str = "True", reason: str = "", message: str = "") -> dict:
    return {"type": type_, "status": status, "reason": reason, "message": message}


# MaintenancePolicy statuses as its controller (issue 10) writes them: conditions and activeJob.
POLICY_CASES = [
    ("no status yet", {}, None, "Progressing", "Waiting"),
    ("first evaluation pending", {"conditions": [cond("Ready", "False")]}, None, "Progressing", "first evaluation"),
    ("ready", {"conditions": [cond("Ready", message="champion r3 accuracy 0.91")]}, None, "Healthy", "champion r3"),
    ("ready while a scheduled retrain runs", {"conditions": [cond("Ready", message="champion r3")], "activeJob": "m-r4"}, None,
     "Healthy", "m-r4"),
    ("degraded, retraining", {"conditions": [cond("Degraded", reason="BelowThreshold"), cond("Ready", "False")], "activeJob": "m-r4"},
     None, "Progressing", "m-r4"),
    ("degraded, no retrain running", {"conditions": [cond("Degraded", reason="BelowThreshold", message="accuracy 0.71 < 0.8")]},
     None, "Degraded", "no retrain running"),
    ("stalled", {"conditions": [cond("Stalled", reason="EvaluationFailed", message="dataset s3://d/fresh/ missing")]}, None,
     "Degraded", "EvaluationFailed"),
    ("suspended by condition", {"conditions": [cond("Suspended"), cond("Ready")]}, None, "Suspended", "Suspended"),
    ("suspended by spec", {"conditions": [cond("Ready")]}, {"suspend": True}, "Suspended", "Suspended"),
    ("spec not yet observed", {"observedGeneration": 1, "conditions": [cond("Ready")]}, None, "Progressing", "generation 2"),
]


@pytest.mark.parametrize("status, spec, expected, fragment", [c[1:] for c in POLICY_CASES], ids=[c[0] for c in POLICY_CASES])
def test_maintenancepolicy_health(status: dict, spec: dict | None, expected: str, fragment: str) -> None:
    obj: dict[str, Any] = {"metadata": {"name": "m", "generation": 2}, "spec": spec or {"model": "m"}}
    if status:
        obj["status"] = status
    got, message = health("MaintenancePolicy", obj)
    assert (got, fragment in message) == (expected, True), message


@pytest.mark.parametrize("path, prefix", [("argocd-cm-health.yaml", ("data",)), ("argo-cd-values.yaml", ("configs", "cm"))])
def test_shipped_snippets_hold_the_tested_lua_verbatim(path: str, prefix: tuple[str, ...]) -> None:
    doc = yaml.safe_load((ARGOCD / path).read_text())
    for key in prefix:
        doc = doc[key]
    assert doc == {KEYS[kind]: script.read_text() for kind, script in SCRIPTS.items()}
