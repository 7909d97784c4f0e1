"""Argo CD's health checks for Tuneloop's kinds, run as Argo CD runs them: the Lua file as
the body of a function of `obj`, in Lua 5.1 (Argo CD's gopher-lua speaks 5.1), through lupa.

FineTuneJob statuses are not made up: they come from the operator's own `derive_status`
over every row of the status table in tests/operator/test_status.py; MaintenancePolicy
statuses from passes of the policy controller's `decide` (tests/operator/test_policy_decide.py).
"""

from __future__ import annotations

import importlib.util
import re
from datetime import datetime, timedelta
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


def search_statuses() -> dict[str, dict]:
    """Statuses the search controller's own `derive_search_status` writes (issue 14)."""
    from tuneloop.api.finetunejob import FineTuneJobSpec
    from tuneloop.operator.tuning.observe import TrialObservation
    from tuneloop.operator.tuning.status import derive_search_status
    from tuneloop.tuning.study import TrialRecord

    spec = FineTuneJobSpec.from_dict({
        "task": "regression", "model": {"source": "s3://m/b"}, "dataset": {"train": "s3://d/t"}, "output": {"uri": "s3://o/p/"},
        "tuning": {"objective": {"metric": "mse"}, "trials": 2, "pruner": {"type": "none"},
                   "searchSpace": [{"path": "training.learningRate", "low": 1e-4, "high": 1e-2, "log": True}]}})
    lr = {"training.learningRate": 1e-3}
    complete = TrialRecord(0, lr, "Complete", 0.2, user_attrs={"final": "s3://o/p/trials/0/final/"})
    cases = {
        "search starting": ([TrialRecord(0, lr)], {}),
        "search training": ([complete, TrialRecord(1, lr)], {1: TrialObservation(1, "Active", "Training", "training")}),
        "search trial stuck": ([TrialRecord(0, lr)], {0: TrialObservation(0, "Active", "ImagePullBackOff", "no image", stalled=True)}),
        "search done": ([complete, TrialRecord(1, lr, "Pruned", 0.5)], {}),
        "search all failed": ([TrialRecord(0, lr, "Failed"), TrialRecord(1, lr, "Failed")], {}),
    }
    return {name: derive_search_status(spec.tuning, records, observations, previous={}, generation=1, now=STATUS.NOW)
            for name, (records, observations) in cases.items()}


@pytest.mark.parametrize("name, expected, fragment", [
    ("search starting", "Progressing", "0/2 trials done"), ("search training", "Progressing", "best so far trial 0"),
    ("search trial stuck", "Degraded", "trial 0: no image"), ("search done", "Healthy", "best trial 0"),
    ("search all failed", "Degraded", "NoTrialSucceeded"),
])
def test_finetunejob_health_of_a_search(name: str, expected: str, fragment: str) -> None:
    got, message = health("FineTuneJob", {"metadata": {"name": "ft", "generation": 1}, "status": search_statuses()[name]})
    assert got == expected and fragment in message, message


def load_policy_table() -> Any:
    spec = importlib.util.spec_from_file_location("policy_table", REPO / "tests" / "operator" / "test_policy_decide.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


POLICY = load_policy_table()
T0 = POLICY.T0


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


# MaintenancePolicy statuses are not made up either: each scenario plays passes of the real
# `decide` (tests/operator/test_policy_decide.py's Loop) and returns the policy as Argo CD
# sees it: the spec as applied and the status the last pass wrote.
def first_revision_training() -> Any:
    loop = POLICY.Loop(POLICY.spec())
    loop.step(T0)
    return loop


def first_revision_evaluating() -> Any:
    loop = first_revision_training()
    loop.train("router-r1")
    loop.step(minutes(1))
    return loop


def pending_without_champion() -> Any:
    loop = first_revision_training()  # the first revision failed: no champion, nothing active
    loop.revisions["router-r1"] = POLICY.RevisionRun(phase="Failed", message="OOMKilled")
    loop.step(minutes(2))
    return loop


def ready() -> Any:
    return POLICY.champion_loop(triggers=POLICY.prom(for_="10m"), guards={"cooldown": "1h"})


def ready_within_threshold() -> Any:
    loop = ready()
    loop.step(minutes(30), prometheus=POLICY.Reading(0.9))
    return loop


def degraded_waiting_for() -> Any:
    loop = ready()  # below the threshold, but not yet for 10 minutes: nothing retrains yet
    loop.step(minutes(90), prometheus=POLICY.Reading(0.7))
    return loop


def degraded_retraining() -> Any:
    loop = degraded_waiting_for()
    assert loop.step(minutes(101), prometheus=POLICY.Reading(0.7)).retrained == "metric"
    return loop


def degraded_in_cooldown() -> Any:
    loop = degraded_retraining()  # the challenger loses; the model stays degraded, cooldown holds the next retrain
    loop.train("router-r2")
    loop.step(minutes(102), prometheus=POLICY.Reading(0.7))
    loop.gate("r2", 0.6, 0.8)
    loop.step(minutes(103), prometheus=POLICY.Reading(0.7))
    assert loop.verdicts()["r2"] == "Rejected"
    loop.step(minutes(120), prometheus=POLICY.Reading(0.7))
    return loop


def ready_while_a_retrain_runs() -> Any:
    loop = POLICY.champion_loop(triggers={"manual": {}}, guards={"cooldown": "0s"})
    assert loop.step(minutes(30), manual="now").retrained == "manual"
    return loop


def prometheus_unreachable() -> Any:
    loop = ready()
    loop.tuning = POLICY.Tuning(stalled_after=60, backoff_base=10, backoff_max=40)
    for seconds in (0, 10, 30, 70):
        loop.step(minutes(30) + timedelta(seconds=seconds), prometheus=POLICY.Reading(error="connection refused"))
    return loop


def suspended_while_degraded() -> Any:
    loop = POLICY.champion_loop(triggers=POLICY.prom(for_="0s"), guards={"suspend": True, "cooldown": "0s"})
    loop.step(minutes(30), prometheus=POLICY.Reading(0.1))
    return loop


def pinned() -> Any:
    loop = POLICY.champion_loop()
    loop.spec = POLICY.spec(pinnedRevision="r1")
    loop.step(minutes(30))
    return loop


def adopted() -> Any:
    loop = POLICY.Loop(POLICY.spec(adoptModelURI="s3://prod/router/v7/"))
    loop.step(T0)
    return loop


# (scenario, the phase decide wrote, Argo CD's health, a fragment of the operator's own words in the message)
POLICY_SCENARIOS = [
    (first_revision_training, "Retraining", "Progressing", "router-r1"),
    (first_revision_evaluating, "Evaluating", "Progressing", "router-r1 evaluating"),
    (pending_without_champion, "Pending", "Progressing", "no champion yet"),
    (ready, "Ready", "Healthy", "champion r1 serves"),
    (ready_within_threshold, "Ready", "Healthy", "champion r1"),
    (adopted, "Ready", "Healthy", "champion r0 serves s3://prod/router/v7/"),
    (pinned, "Ready", "Healthy", "pinned by spec.pinnedRevision"),
    (ready_while_a_retrain_runs, "Retraining", "Healthy", "retraining: router-r2"),
    (degraded_waiting_for, "Degraded", "Degraded", "accuracy"),
    (degraded_retraining, "Retraining", "Progressing", "router-r2"),
    (degraded_in_cooldown, "Degraded", "Degraded", "held by spec.guards.cooldown"),
    (prometheus_unreachable, "Stalled", "Degraded", "connection refused"),
    (suspended_while_degraded, "Suspended", "Suspended", "spec.guards.suspend"),
]


def policy_object(loop: Any) -> dict:
    return {"metadata": {"name": "router", "generation": 1}, "spec": loop.spec.to_dict(), "status": loop.state}


@pytest.mark.parametrize("scenario, phase, expected, fragment", POLICY_SCENARIOS, ids=[s[0].__name__ for s in POLICY_SCENARIOS])
def test_maintenancepolicy_health_of_statuses_decide_writes(scenario: Any, phase: str, expected: str, fragment: str) -> None:
    loop = scenario()
    assert loop.state["phase"] == phase  # the scenario reaches the state it names
    got, message = health("MaintenancePolicy", policy_object(loop))
    assert (got, fragment in message) == (expected, True), message


def test_every_phase_decide_writes_has_a_scenario() -> None:
    import inspect

    from tuneloop.operator.policy import decide

    phases = set(re.findall(r'phase, reason = "(\w+)"', inspect.getsource(decide))) | {"Stalled"}
    assert phases == {s[1] for s in POLICY_SCENARIOS}


def test_maintenancepolicy_invalid_spec_is_degraded_with_the_field_to_fix() -> None:
    obs = POLICY.obs(problems=("spec.promotion.metric: 'bleu' is not computed for sequence-classification",))
    status = POLICY.decide(None, obs, {}, T0).status
    got, message = health("MaintenancePolicy", {"metadata": {"generation": 1}, "spec": {}, "status": status})
    assert got == "Degraded" and "InvalidSpec" in message and "spec.promotion.metric" in message


def test_maintenancepolicy_without_status_or_with_an_unobserved_spec_is_progressing() -> None:
    assert health("MaintenancePolicy", {"metadata": {"generation": 1}, "spec": {}})[0] == "Progressing"
    obj = policy_object(ready())
    obj["metadata"]["generation"] = 2
    got, message = health("MaintenancePolicy", obj)
    assert got == "Progressing" and "generation 2" in message


@pytest.mark.parametrize("path, prefix", [("argocd-cm-health.yaml", ("data",)), ("argo-cd-values.yaml", ("configs", "cm"))])
def test_shipped_snippets_hold_the_tested_lua_verbatim(path: str, prefix: tuple[str, ...]) -> None:
    doc = yaml.safe_load((ARGOCD / path).read_text())
    for key in prefix:
        doc = doc[key]
    assert doc == {KEYS[kind]: script.read_text() for kind, script in SCRIPTS.items()}
