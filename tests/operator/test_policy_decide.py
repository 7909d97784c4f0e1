"""The MaintenancePolicy decision table: every trigger and guard through the pure `decide`.

Each test plays passes of the controller by hand: observations and a clock in, the action
out, its status fed back in as the next pass's state (exactly what the handler persists).
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from tuneloop.api.policy import MaintenancePolicySpec
from tuneloop.operator.policy.decide import (
    Action, EvaluationRun, Observations, Reading, RevisionRun, Tuning, decide, gate_name,
)
from support.manifests import maintenancepolicy

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)  # a Monday
OUT = "s3://models/out/demo/"


def spec(**changes: Any) -> MaintenancePolicySpec:
    doc = copy.deepcopy(maintenancepolicy()["spec"])
    doc["evaluation"].pop("schedule")
    doc["triggers"] = {}
    doc["guards"] = {"cooldown": "1h"}
    for key, value in changes.items():
        doc[key] = value
    return MaintenancePolicySpec.from_dict(doc)


def prom(threshold: float = 0.8, for_: str = "10m", op: str = "<") -> dict:
    return {"metric": {"source": "prometheus", "query": "accuracy", "prometheusURL": "http://prom:9090",
                       "operator": op, "threshold": threshold, "for": for_}}


def obs(**kw: Any) -> Observations:
    return Observations(name="router", created=kw.pop("created", T0 - timedelta(days=1)), **kw)


class Loop:
    """Passes of the controller against a make-believe cluster: FineTuneJobs and Jobs as the
    test says they are; the status each pass writes is the next pass's state."""

    def __init__(self, spec: MaintenancePolicySpec, state: dict | None = None, tuning: Tuning = Tuning()):
        self.spec, self.state, self.tuning = spec, state or {}, tuning
        self.revisions: dict[str, RevisionRun] = {}
        self.evaluations: dict[str, EvaluationRun] = {}
        self.created: list[str] = []
        self.requested: list[str] = []

    def step(self, now: datetime, **kw: Any) -> Action:
        action = decide(self.spec, obs(revisions=dict(self.revisions), evaluations=dict(self.evaluations), **kw),
                        self.state, now, self.tuning)
        self.state = action.status
        for new in action.create:
            if new.name not in self.revisions:
                self.revisions[new.name] = RevisionRun(phase="Pending")
                self.created.append(new.name)
        for request in action.evaluate:
            if request.name not in self.evaluations:
                self.evaluations[request.name] = EvaluationRun()
                self.requested.append(request.name)
        for name in action.delete_evaluations:
            self.evaluations.pop(name, None)
        for name in action.delete_revisions:
            self.revisions.pop(name, None)
        return action

    def train(self, name: str, uri: str | None = None) -> None:
        self.revisions[name] = RevisionRun(phase="Succeeded", model_uri=uri or f"s3://m/{name}/final/", completed="2026-03-02T12:00:00Z")

    def gate(self, revision: str, challenger: float, champion: float | None = None, metric: str = "accuracy") -> None:
        request_models = [m for m in self.last_gate_models(revision)]
        values = [challenger, champion]
        report = {"rows": 40, "models": [{"model": m, "metrics": {metric: v}} for m, v in zip(request_models, values)]}
        self.evaluations[gate_name("router", revision)] = EvaluationRun(succeeded=True, report=report)

    def last_gate_models(self, revision: str) -> tuple[str, ...]:
        entry = next(h for h in self.state["history"] if h["revision"] == revision)
        champion = self.state.get("champion")
        return (entry["modelURI"],) + ((champion["modelURI"],) if champion and champion["revision"] != revision else ())

    def verdicts(self) -> dict[str, str]:
        return {h["revision"]: h["verdict"] for h in self.state.get("history", [])}

    def condition(self, type_: str) -> dict:
        return next(c for c in self.state["conditions"] if c["type"] == type_)


def reasons(action: Action) -> list[str]:
    return [reason for _, reason, _ in action.events]


# --- first champion -------------------------------------------------------------------------------


def test_a_new_policy_trains_revision_1_at_once_then_the_gate_promotes_it() -> None:
    loop = Loop(spec())
    action = loop.step(T0)
    assert action.retrained == "initial" and loop.created == ["router-r1"]
    assert loop.state["activeJob"] == "router-r1" and loop.state["phase"] == "Retraining"
    assert loop.state["lastTrigger"]["type"] == "initial"
    assert loop.step(T0 + timedelta(seconds=5)).create == ()  # no second revision while r1 trains

    loop.train("router-r1")
    action = loop.step(T0 + timedelta(minutes=5))
    assert [e.models for e in action.evaluate] == [("s3://m/router-r1/final/",)]  # no champion to compare with
    assert loop.state["phase"] == "Evaluating"
    loop.gate("r1", 0.9)
    action = loop.step(T0 + timedelta(minutes=6))
    assert action.promoted == 1 and action.publish == "s3://m/router-r1/final/"
    assert loop.state["champion"]["revision"] == "r1" and loop.state["champion"]["metric"] == 0.9
    assert loop.state["published"] == "s3://m/router-r1/final/"
    assert loop.state["phase"] == "Ready" and loop.condition("Ready")["status"] == "True"
    assert loop.state["activeJob"] is None
    action = loop.step(T0 + timedelta(minutes=7))
    assert action.publish is None and action.delete_evaluations == ("router-r1-gate",)  # consumed, then cleaned up


def test_adopt_model_uri_becomes_champion_r0_without_training() -> None:
    loop = Loop(spec(adoptModelURI="s3://prod/router/v7/"))
    action = loop.step(T0)
    assert action.create == () and action.publish is None  # already in production
    assert loop.state["champion"]["revision"] == "r0" and loop.state["champion"]["modelURI"] == "s3://prod/router/v7/"
    assert loop.verdicts() == {"r0": "Adopted"}


# --- the gate -------------------------------------------------------------------------------------------


def champion_loop(**changes: Any) -> Loop:
    loop = Loop(spec(**changes))
    loop.step(T0)
    loop.train("router-r1")
    loop.step(T0 + timedelta(minutes=1))
    loop.gate("r1", 0.80)
    loop.step(T0 + timedelta(minutes=2))
    assert loop.state["champion"]["revision"] == "r1"
    return loop


def retrain_by_hand(loop: Loop, now: datetime, value: str) -> Action:
    return loop.step(now, manual=value)


@pytest.mark.parametrize("challenger, min_improvement, verdict", [
    (0.90, 0.0, "Promoted"),
    (0.80, 0.0, "Rejected"),  # a tie does not beat the champion
    (0.70, 0.0, "Rejected"),
    (0.804, 0.005, "Rejected"),  # better, but not by minImprovement
    (0.806, 0.005, "Promoted"),
])
def test_the_gate_compares_both_models_on_the_same_run(challenger: float, min_improvement: float, verdict: str) -> None:
    loop = champion_loop(triggers={"manual": {}}, promotion={"metric": "accuracy", "direction": "maximize",
                                                             "minImprovement": min_improvement})
    retrain_by_hand(loop, T0 + timedelta(minutes=3), "go")
    loop.train("router-r2")
    action = loop.step(T0 + timedelta(minutes=4))
    [gate] = action.evaluate
    assert gate.models == ("s3://m/router-r2/final/", "s3://m/router-r1/final/")  # challenger, champion: one run
    loop.gate("r2", challenger, 0.80)
    action = loop.step(T0 + timedelta(minutes=5))
    assert loop.verdicts()["r2"] == verdict
    entry = loop.state["history"][-1]
    assert (entry["metric"], entry["championMetric"], entry["evaluationRows"]) == (challenger, 0.80, 40)
    if verdict == "Promoted":
        assert loop.state["champion"]["revision"] == "r2" and action.publish == "s3://m/router-r2/final/"
        assert "ModelPromoted" in reasons(action)
    else:
        assert loop.state["champion"]["revision"] == "r1" and action.publish is None and action.rejected == 1
        [(_, _, message)] = [e for e in action.events if e[1] == "ChallengerRejected"]
        assert f"{challenger:.4f}" in message and "0.8000" in message  # both numbers in the Event


def test_a_gate_run_against_a_champion_that_changed_meanwhile_runs_again() -> None:
    loop = champion_loop(triggers={"manual": {}}, guards={"maxConcurrentJobs": 2, "cooldown": "0s"})
    retrain_by_hand(loop, T0 + timedelta(minutes=3), "a")
    retrain_by_hand(loop, T0 + timedelta(minutes=4), "b")
    loop.train("router-r2")
    loop.train("router-r3")
    action = loop.step(T0 + timedelta(minutes=5))
    assert {g.name: g.models[1] for g in action.evaluate} == {  # both gates against r1
        "router-r2-gate": "s3://m/router-r1/final/", "router-r3-gate": "s3://m/router-r1/final/"}
    loop.gate("r2", 0.90, 0.80)
    loop.gate("r3", 0.85, 0.80)  # beats r1, but r2 is promoted first in the same pass
    action = loop.step(T0 + timedelta(minutes=6))
    assert loop.state["champion"]["revision"] == "r2" and loop.verdicts()["r3"] == "Evaluating"
    assert "GateRerun" in reasons(action)
    [again] = [g for g in action.evaluate if g.revision == "r3"]
    assert again.name == "router-r3-gate2" and again.models == ("s3://m/router-r3/final/", "s3://m/router-r2/final/")
    report = {"rows": 40, "models": [{"model": m, "metrics": {"accuracy": v}} for m, v in zip(again.models, (0.85, 0.90))]}
    loop.evaluations["router-r3-gate2"] = EvaluationRun(succeeded=True, report=report)
    action = loop.step(T0 + timedelta(minutes=7))
    assert loop.verdicts()["r3"] == "Rejected" and loop.state["champion"]["revision"] == "r2"
    assert loop.state["history"][-1]["gateRuns"] == 2


def test_a_revision_the_api_server_refuses_is_failed_in_status_not_created_again() -> None:
    loop = champion_loop(triggers={"manual": {}}, guards={"cooldown": "1h"})
    retrain_by_hand(loop, T0 + timedelta(minutes=3), "a")
    loop.revisions.pop("router-r2")  # what carry_out saw: the create was refused
    action = loop.step(T0 + timedelta(minutes=4), refused={"router-r2": "rejected by the API server (422): denied by policy"})
    assert action.create == () and loop.verdicts()["r2"] == "Failed"
    assert "denied by policy" in loop.state["history"][-1]["message"] and "RetrainFailed" in reasons(action)
    assert loop.state["champion"]["revision"] == "r1"
    assert loop.step(T0 + timedelta(minutes=5)).create == ()  # the cooldown holds: no retrain loop of refusals


def test_minimize_direction_prefers_the_lower_loss() -> None:
    loop = Loop(spec(triggers={"manual": {}}, promotion={"metric": "eval_loss", "direction": "minimize"}))
    loop.step(T0)
    loop.train("router-r1")
    loop.step(T0 + timedelta(minutes=1))
    loop.gate("r1", 0.5, metric="eval_loss")
    loop.step(T0 + timedelta(minutes=2))
    retrain_by_hand(loop, T0 + timedelta(minutes=3), "1")
    loop.train("router-r2")
    loop.step(T0 + timedelta(minutes=4))
    loop.gate("r2", 0.4, 0.5, metric="eval_loss")
    loop.step(T0 + timedelta(minutes=5))
    assert loop.state["champion"]["revision"] == "r2"


def test_a_failed_revision_or_gate_never_touches_the_champion() -> None:
    loop = champion_loop(triggers={"manual": {}})
    retrain_by_hand(loop, T0 + timedelta(minutes=3), "a")
    loop.revisions["router-r2"] = RevisionRun(phase="Failed", message="InvalidInput: no label column")
    action = loop.step(T0 + timedelta(minutes=4))
    assert loop.verdicts()["r2"] == "Failed" and "RetrainFailed" in reasons(action)
    retrain_by_hand(loop, T0 + timedelta(minutes=5), "b")
    loop.train("router-r3")
    loop.step(T0 + timedelta(minutes=6))
    loop.evaluations["router-r3-gate"] = EvaluationRun(failed=True, message="OOMKilled")
    action = loop.step(T0 + timedelta(minutes=7))
    assert loop.verdicts()["r3"] == "Rejected" and "OOMKilled" in loop.state["history"][-1]["message"]
    assert loop.state["champion"]["revision"] == "r1" and action.publish is None


# --- metric trigger and its `for` ------------------------------------------------------------------------


def test_metric_must_hold_for_its_duration_across_an_operator_restart() -> None:
    loop = champion_loop(triggers=prom(for_="10m"))
    t = T0 + timedelta(hours=2)
    action = loop.step(t, prometheus=Reading(0.7))
    assert action.create == () and "DegradationDetected" in reasons(action)
    assert loop.state["metricWatch"]["breachedSince"] == "2026-03-02T14:00:00Z"
    assert loop.condition("Degraded")["status"] == "True" and loop.state["phase"] == "Degraded"

    # The operator restarts: a fresh Loop with only the persisted status.
    restarted = Loop(loop.spec, copy.deepcopy(loop.state))
    restarted.revisions = dict(loop.revisions)
    action = restarted.step(t + timedelta(minutes=6), prometheus=Reading(0.7))
    assert action.create == () and "DegradationDetected" not in reasons(action)  # neither reset nor re-announced
    action = restarted.step(t + timedelta(minutes=10), prometheus=Reading(0.71))
    assert action.retrained == "metric" and [n.name for n in action.create] == ["router-r2"]
    assert restarted.state["lastTrigger"]["reason"] == "Degraded"


def test_a_recovered_metric_resets_the_hysteresis() -> None:
    loop = champion_loop(triggers=prom(for_="10m"))
    t = T0 + timedelta(hours=2)
    loop.step(t, prometheus=Reading(0.7))
    loop.step(t + timedelta(minutes=5), prometheus=Reading(0.9))
    assert loop.state["metricWatch"]["breachedSince"] is None
    assert loop.step(t + timedelta(minutes=11), prometheus=Reading(0.7)).create == ()  # counts from here again
    assert loop.step(t + timedelta(minutes=21), prometheus=Reading(0.7)).retrained == "metric"


def test_evaluation_source_reads_the_champions_last_scheduled_evaluation() -> None:
    trig = {"metric": {"source": "evaluation", "operator": "<", "threshold": 0.8, "for": "0s"}}
    loop = champion_loop(triggers=trig, evaluation={"dataset": {"uri": "s3://data/fresh/"}, "metric": "accuracy",
                                                    "schedule": "0 3 * * *", "timeZone": "Europe/Berlin"})
    assert loop.state["nextEvaluation"] == "2026-03-03T02:00:00Z"  # 03:00 in Berlin (CET)
    t = datetime(2026, 3, 3, 2, 0, 30, tzinfo=timezone.utc)
    action = loop.step(t)
    [request] = action.evaluate
    assert request.purpose == "champion" and request.models == ("s3://m/router-r1/final/",)
    assert loop.state["pendingEvaluation"]["job"] == request.name
    loop.evaluations[request.name] = EvaluationRun(succeeded=True, report={"rows": 12, "models": [
        {"model": "s3://m/router-r1/final/", "metrics": {"accuracy": 0.6}}]})
    action = loop.step(t + timedelta(minutes=1))
    assert loop.state["lastEvaluation"] | {"value": 0.6, "rows": 12, "revision": "r1", "metric": "accuracy"} == loop.state["lastEvaluation"]
    assert action.retrained == "metric"


# --- guards ---------------------------------------------------------------------------------------------


def test_cooldown_holds_a_second_retrain_back_but_not_a_manual_one() -> None:
    loop = champion_loop(triggers={**prom(for_="0s"), "manual": {}}, guards={"cooldown": "1h"})
    t = T0 + timedelta(minutes=10)  # r1 started at T0: inside the cooldown
    action = loop.step(t, prometheus=Reading(0.5))
    assert action.create == () and "cooldown" in loop.condition("Ready")["message"]
    action = loop.step(t + timedelta(minutes=1), prometheus=Reading(0.5), manual="please")
    assert action.retrained == "manual" and loop.state["manualSeen"] == "please"
    assert loop.step(t + timedelta(minutes=2), prometheus=Reading(0.5), manual="please").create == ()  # same value: once


def test_manual_never_skips_the_concurrency_limit_and_waits_for_it() -> None:
    loop = Loop(spec(triggers={"manual": {}}, guards={"maxConcurrentJobs": 1, "cooldown": "0s"}))
    loop.step(T0)  # r1 training
    action = loop.step(T0 + timedelta(minutes=1), manual="now")
    assert action.create == () and "maxConcurrentJobs" in loop.condition("Ready")["message"]
    assert loop.state.get("manualSeen") is None  # still pending
    loop.train("router-r1")
    loop.step(T0 + timedelta(minutes=2), manual="now")
    loop.gate("r1", 0.9)
    action = loop.step(T0 + timedelta(minutes=3), manual="now")  # r1 gated and promoted: room again
    assert action.retrained == "manual" and [n.name for n in action.create] == ["router-r2"]


def test_two_concurrent_jobs_allowed() -> None:
    loop = Loop(spec(triggers={"manual": {}}, guards={"maxConcurrentJobs": 2, "cooldown": "0s"}))
    loop.step(T0)
    assert loop.step(T0 + timedelta(seconds=1), manual="x").retrained == "manual"
    assert loop.step(T0 + timedelta(seconds=2), manual="y").create == ()


def test_suspend_fires_nothing_and_a_pending_manual_request_runs_after_resume() -> None:
    loop = champion_loop(triggers={**prom(for_="0s"), "manual": {}}, guards={"suspend": True, "cooldown": "0s"})
    action = loop.step(T0 + timedelta(hours=1), prometheus=Reading(0.1), manual="go")
    assert action.create == () and loop.state["phase"] == "Suspended"
    loop.spec = spec(triggers={**prom(for_="0s"), "manual": {}}, guards={"cooldown": "0s"})
    assert loop.step(T0 + timedelta(hours=1, minutes=1), prometheus=Reading(0.1), manual="go").retrained == "manual"


def test_suspend_lets_a_running_revision_finish_and_be_gated() -> None:
    loop = Loop(spec())
    loop.step(T0)
    loop.spec = spec(guards={"suspend": True})
    loop.train("router-r1")
    assert loop.step(T0 + timedelta(minutes=1)).evaluate  # the gate still runs


# --- schedule --------------------------------------------------------------------------------------------


def test_missed_schedule_after_downtime_runs_once() -> None:
    loop = champion_loop(triggers={"schedule": {"cron": "0 * * * *"}}, guards={"cooldown": "0s"})
    # The operator was down for five hours: five slots missed, one retrain.
    action = loop.step(T0 + timedelta(hours=5, minutes=30))
    assert action.retrained == "schedule" and len(action.create) == 1
    assert loop.state["lastScheduledRetrain"] == "2026-03-02T17:00:00Z"
    loop.train("router-r2")
    loop.step(T0 + timedelta(hours=5, minutes=31))
    loop.gate("r2", 0.7, 0.8)
    assert loop.step(T0 + timedelta(hours=5, minutes=32)).create == ()
    assert loop.step(T0 + timedelta(hours=6, seconds=1)).retrained == "schedule"


def test_schedule_slot_during_cooldown_is_skipped_not_queued() -> None:
    loop = champion_loop(triggers={"schedule": {"cron": "0 * * * *"}}, guards={"cooldown": "2h"})
    assert loop.step(T0 + timedelta(hours=1)).create == ()
    assert loop.step(T0 + timedelta(hours=1, minutes=5)).create == ()  # the 13:00 slot is gone
    assert loop.step(T0 + timedelta(hours=2, seconds=1)).retrained == "schedule"


# --- outages ------------------------------------------------------------------------------------------------


def test_prometheus_unreachable_never_retrains_stalls_and_backs_off() -> None:
    loop = champion_loop(triggers=prom(for_="0s"))
    t = T0 + timedelta(hours=3)
    tuning = Tuning(stalled_after=60, backoff_base=10, backoff_max=40)
    loop.tuning = tuning
    actions = [loop.step(t + timedelta(minutes=2, seconds=s), prometheus=Reading(error="connection refused")) for s in (0, 10, 30)]
    assert all(a.create == () for a in actions)
    watch = loop.state["metricWatch"]
    assert watch["failures"] == 3 and watch["retryAt"] == "2026-03-02T15:03:10Z"  # 10, 20, then 40 s
    assert loop.condition("Stalled")["status"] == "False"  # not yet past stalled_after
    loop.step(t + timedelta(minutes=3, seconds=10), prometheus=Reading(error="connection refused"))
    assert loop.condition("Stalled")["status"] == "True" and "connection refused" in loop.condition("Stalled")["message"]
    assert loop.state["metricWatch"]["retryAt"] == "2026-03-02T15:03:50Z"  # capped at backoff_max
    # Not queried while backing off (None): no retrain on the stale value either.
    assert loop.step(t + timedelta(hours=2)).create == ()
    action = loop.step(t + timedelta(hours=2, seconds=1), prometheus=Reading(0.7))
    assert action.retrained == "metric" and loop.condition("Stalled")["status"] == "False"


# --- pinned revision, history --------------------------------------------------------------------------------


def test_pinned_revision_rolls_back_and_holds_promotion() -> None:
    loop = champion_loop(triggers={"manual": {}}, guards={"cooldown": "0s"})
    retrain_by_hand(loop, T0 + timedelta(minutes=3), "1")
    loop.train("router-r2")
    loop.step(T0 + timedelta(minutes=4))
    loop.gate("r2", 0.9, 0.8)
    loop.step(T0 + timedelta(minutes=5))
    assert loop.state["champion"]["revision"] == "r2"

    loop.spec = spec(triggers={"manual": {}}, guards={"cooldown": "0s"}, pinnedRevision="r1")
    action = loop.step(T0 + timedelta(minutes=6))
    assert loop.state["champion"]["revision"] == "r1" and action.publish == "s3://m/router-r1/final/"
    assert "RolledBack" in reasons(action)
    assert loop.condition("Ready")["reason"] == "Pinned" and "promotion held" in loop.condition("Ready")["message"]
    retrain_by_hand(loop, T0 + timedelta(minutes=7), "2")
    loop.train("router-r3")
    loop.step(T0 + timedelta(minutes=8))
    loop.gate("r3", 0.95, 0.8)
    action = loop.step(T0 + timedelta(minutes=9))
    assert loop.verdicts()["r3"] == "Held" and loop.state["champion"]["revision"] == "r1" and action.publish is None


def test_pinning_an_unknown_revision_stalls_with_the_field_named() -> None:
    loop = champion_loop()
    loop.spec = spec(pinnedRevision="7")
    action = loop.step(T0 + timedelta(minutes=3))
    stalled = loop.condition("Stalled")
    assert stalled["status"] == "True" and "spec.pinnedRevision" in stalled["message"] and "r1" in stalled["message"]
    assert action.publish is None and loop.state["champion"]["revision"] == "r1"


def test_history_is_capped_but_never_drops_the_champion() -> None:
    loop = champion_loop(triggers={"manual": {}}, guards={"cooldown": "0s"}, historyLimit=2)
    t = T0 + timedelta(minutes=10)
    for n in range(2, 6):
        retrain_by_hand(loop, t, f"v{n}")
        loop.train(f"router-r{n}")
        loop.step(t + timedelta(seconds=1))
        loop.gate(f"r{n}", 0.5, 0.8)  # all rejected: r1 stays champion
        loop.step(t + timedelta(seconds=2))
        t += timedelta(minutes=1)
    assert list(loop.verdicts()) == ["r1", "r5"]  # two entries: the champion always, then the newest
    assert set(loop.revisions) == {"router-r1", "router-r5"}  # older FineTuneJobs deleted, never the champion's


def test_a_revision_created_just_before_a_crash_is_adopted_not_trained_again() -> None:
    loop = Loop(spec(triggers={"manual": {}}))
    loop.revisions["router-r1"] = RevisionRun(phase="Running")  # made, but the status write was lost
    action = loop.step(T0, manual="x")
    assert action.create == () and loop.state["latestRevision"] == 1 and loop.verdicts() == {"r1": "Training"}


def test_invalid_spec_stalls() -> None:
    action = decide(None, obs(problems=("spec.promotion.metric: required",)), {}, T0)
    stalled = next(c for c in action.status["conditions"] if c["type"] == "Stalled")
    assert action.status["phase"] == "Stalled" and "spec.promotion.metric" in stalled["message"]


def test_every_status_decide_writes_fits_the_crd_schema() -> None:
    """The API server rejects a status patch that breaks the schema (a null in a list item)."""
    from tuneloop.api.crds import load_crd
    from tuneloop.api.schema import check_structure

    schema = load_crd("MaintenancePolicy")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    loop = Loop(spec(triggers={**prom(for_="0s"), "manual": {}}, guards={"cooldown": "0s"}))
    statuses = [loop.step(T0).status]
    loop.train("router-r1")
    statuses.append(loop.step(T0 + timedelta(minutes=1)).status)
    loop.gate("r1", 0.9)  # no champion: championMetric is None
    statuses.append(loop.step(T0 + timedelta(minutes=2), prometheus=Reading(error="down")).status)
    statuses.append(loop.step(T0 + timedelta(minutes=3), prometheus=Reading(0.5)).status)
    for status in statuses:
        # Top-level and nested nulls are merge-patch deletions; drop them as the API server does.
        stored = {k: ({kk: vv for kk, vv in v.items() if vv is not None} if isinstance(v, dict) else v)
                  for k, v in status.items() if v is not None}
        assert check_structure(schema, stored, "status") == []


# --- newData ------------------------------------------------------------------------------------------------


def data_report(loop: Loop, objects: int, size: int = 100, newest: str = "2026-03-02T12:30:00Z") -> str:
    job = loop.state["newData"]["job"]
    loop.evaluations[job] = EvaluationRun(succeeded=True, report={
        "objects": objects, "bytes": size, "newest": newest, "since": loop.state["newData"]["since"]})
    return job


def test_new_data_is_counted_by_a_short_job_from_the_latest_revisions_watermark() -> None:
    loop = champion_loop(triggers={"newData": {"uri": "s3://data/incoming/", "minObjects": 3}}, guards={"cooldown": "0s"})
    first = loop.state["newData"]
    assert first["since"] == "2026-03-01T12:00:00Z"  # r1 started before any check: the policy's creation
    assert loop.state["history"][0]["dataWatermark"] == "2026-03-01T12:00:00Z"
    data_report(loop, 2)
    t = T0 + timedelta(minutes=10)
    assert loop.step(t).create == ()  # 2 < minObjects
    assert loop.state["newData"]["objects"] == 2 and loop.state["newData"]["job"] is None
    assert loop.step(t + timedelta(minutes=1)).evaluate == ()  # checked a minute ago: not yet again
    [check] = loop.step(t + timedelta(minutes=6)).evaluate  # data_interval (300 s) later
    assert check.purpose == "data" and check.since == "2026-03-01T12:00:00Z"
    data_report(loop, 3, newest="2026-03-02T12:15:00Z")
    action = loop.step(t + timedelta(minutes=7))
    assert action.retrained == "newData" and "3 new objects" in loop.state["lastTrigger"]["message"]
    assert loop.state["history"][-1]["dataWatermark"] == "2026-03-02T12:15:00Z"  # the next check counts from here
    [check] = loop.step(t + timedelta(minutes=13)).evaluate
    assert check.since == "2026-03-02T12:15:00Z"


def test_new_data_check_failing_stalls_and_never_retrains() -> None:
    loop = champion_loop(triggers={"newData": {"uri": "s3://data/incoming/", "minObjects": 1}}, guards={"cooldown": "0s"})
    loop.evaluations[loop.state["newData"]["job"]] = EvaluationRun(failed=True, message="Error: EndpointConnectionError")
    action = loop.step(T0 + timedelta(minutes=10))
    assert action.create == () and loop.condition("Stalled")["status"] == "True"
    assert "EndpointConnectionError" in loop.condition("Stalled")["message"]
