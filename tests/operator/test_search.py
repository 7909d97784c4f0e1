"""The search controller's pure layers (issue 14): trial children, observations, one step of
the study, and the status; table-driven where the cases are a table."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.operator.builders import Owner
from tuneloop.operator.tuning.builders import (
    LABEL_TRIAL, build_study_config_map, build_trial_children, check_trial_names, records_of,
)
from tuneloop.operator.tuning.decide import advance
from tuneloop.operator.tuning.observe import TrialObservation, final_objective, observe_trial, parse_intermediate
from tuneloop.operator.tuning.status import derive_search_status
from tuneloop.tuning.study import TrialRecord

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
OWNER = Owner("search", "ml", "uid-1")


def spec(**tuning):
    raw = {
        "task": "sequence-classification", "model": {"source": "s3://models/base"}, "dataset": {"train": "s3://data/t.jsonl"},
        "output": {"uri": "s3://out/search/"}, "training": {"maxSteps": 20, "evalEverySteps": 5},
        "tuning": {"objective": {"metric": "eval_loss"},
                   "searchSpace": [{"path": "training.learningRate", "low": 1e-5, "high": 1e-2, "log": True}],
                   "trials": 4, "parallelism": 2, "pruner": {"type": "median", "startupTrials": 1}, **tuning},
    }
    return FineTuneJobSpec.from_dict(raw)


# --- builders -------------------------------------------------------------------------------


def test_trial_children_are_a_plain_jobs_children_named_after_the_trial():
    config_map, job = build_trial_children(OWNER, spec(), 3, {"training.learningRate": 1e-4})
    assert config_map["metadata"]["name"] == "search-t3-config" and job["metadata"]["name"] == "search-t3-trainer"
    for child in (config_map, job):
        assert child["metadata"]["ownerReferences"][0]["name"] == "search"  # the GC finds the owner by name
        assert child["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
        assert child["metadata"]["labels"]["tuneloop.dev/finetunejob"] == "search-t3"
        assert child["metadata"]["labels"][LABEL_TRIAL] == "3"
    rendered = FineTuneJobSpec.from_dict(__import__("yaml").safe_load(config_map["data"]["config.yaml"]))
    assert rendered.tuning is None and rendered.training.learning_rate == 1e-4
    assert rendered.output.uri == "s3://out/search/trials/3/"
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TUNELOOP_JOB_NAME"] == "search-t3"
    volumes = job["spec"]["template"]["spec"]["volumes"]
    assert {"name": "config", "configMap": {"name": "search-t3-config"}} in volumes


def test_study_config_map_round_trips_its_records():
    records = [TrialRecord(0, {"training.learningRate": 1e-3}, "Complete", 0.5, {5: 0.7}),
               TrialRecord(1, {"training.learningRate": 1e-4}, "Running", None, {})]
    config_map = build_study_config_map(OWNER, records)
    assert config_map["metadata"]["name"] == "search-study"
    assert records_of(config_map) == records
    assert records_of(None) is None and records_of({"data": {}}) == []
    with pytest.raises(ValueError):
        records_of({"data": {"trials.json": "{not json"}})


def test_a_name_too_long_for_the_last_trial_is_refused():
    assert check_trial_names("a" * 40, spec()) == []
    [problem] = check_trial_names("a" * 52, spec(trials=100))
    assert problem.path == "metadata.name" and "at most 51 characters" in problem.message


# --- observations ------------------------------------------------------------------------------


def exposition(*, value=None, eval_step=None, step=None, job="search-t1", metric="eval_loss"):
    labels = f'job="{job}",namespace="ml"'
    lines = []
    if value is not None:
        lines += ["# TYPE tuneloop_trainer_eval_metric gauge", f'tuneloop_trainer_eval_metric{{{labels},metric="{metric}"}} {value}']
    if eval_step is not None:
        lines += ["# TYPE tuneloop_trainer_eval_step gauge", f"tuneloop_trainer_eval_step{{{labels}}} {eval_step}"]
    if step is not None:
        lines += ["# TYPE tuneloop_trainer_step gauge", f"tuneloop_trainer_step{{{labels}}} {step}"]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text, expected", [
    (exposition(value=0.8, eval_step=10, step=13), (10, 0.8)),      # the evaluation's own step
    (exposition(value=0.8, step=13), (13, 0.8)),                    # an older trainer: its current step
    (exposition(step=13), None),                                     # no evaluation yet
    (exposition(value=0.8, eval_step=10, job="other"), None),        # another job's series
    (exposition(value=0.8, eval_step=10, metric="accuracy"), None),  # not the objective
])
def test_parse_intermediate(text, expected):
    assert parse_intermediate(text, "eval_loss", job="search-t1", namespace="ml") == expected


def test_the_objective_is_the_validation_one_never_the_test_one():
    report = json.dumps({"metrics": {"accuracy": 0.9, "eval_loss": 0.3}, "validation": {"accuracy": 0.7, "eval_loss": 0.3}})
    assert final_objective(report, "accuracy") == 0.7
    assert final_objective(json.dumps({"metrics": {"accuracy": 0.9}}), "accuracy") is None
    assert final_objective("tuneloop-train: error: bad", "accuracy") is None


def job(*conditions, name="search-t1-trainer", uid="job-uid"):
    return {"metadata": {"name": name, "uid": uid, "creationTimestamp": "2026-12-01T11:00:00Z"},
            "spec": {"suspend": False},
            "status": {"conditions": [{"type": t, "status": "True", "lastTransitionTime": "2026-12-01T11:30:00Z"} for t in conditions]}}


def pod(phase, message=None, exit_code=0):
    container = {"name": "trainer"}
    if phase in ("Succeeded", "Failed"):
        container["state"] = {"terminated": {"exitCode": exit_code, "message": message or ""}}
    else:
        container["state"] = {"running": {}}
    return {"metadata": {"name": "p", "creationTimestamp": "2026-12-01T11:00:00Z"},
            "status": {"phase": phase, "podIP": "10.0.0.1", "containerStatuses": [container]}}


TRIAL = FineTuneJobSpec.from_dict({**spec().to_dict(), "tuning": None, "output": {"uri": "s3://out/search/trials/1/"}})
REPORT = json.dumps({"step": 20, "totalSteps": 20, "metrics": {"eval_loss": 0.4, "accuracy": 0.9},
                     "validation": {"eval_loss": 0.41}, "checkpoints": {"final": "s3://out/search/trials/1/final/"}})


@pytest.mark.parametrize("the_job, pods, scraped, state, check", [
    (None, [], None, "Missing", {}),
    ({**job(), "metadata": {**job()["metadata"], "deletionTimestamp": "2026-12-01T11:59:00Z"}}, [pod("Running")], None,
     "Missing", {"reason": "WaitingForOldJob"}),
    (job("Complete"), [pod("Succeeded", REPORT)], None, "Succeeded",
     {"value": 0.41, "final_uri": "s3://out/search/trials/1/final/", "metrics": {"eval_loss": 0.4, "accuracy": 0.9},
      "final_step": 20}),
    (job("Complete"), [pod("Succeeded", json.dumps({"step": 20, "totalSteps": 20}))], None, "Failed", {"reason": "NoObjective"}),
    (job("Failed"), [pod("Failed", "tuneloop-train: error: no label column", exit_code=2)], None, "Failed", {}),
    (job(), [pod("Running")], exposition(value=0.9, eval_step=5), "Active", {"reason": "Training", "intermediate": (5, 0.9)}),
    (job(), [pod("Running")], None, "Active", {"intermediate": None}),
])
def test_observe_trial(the_job, pods, scraped, state, check):
    obs = observe_trial(1, the_job, pods, TRIAL, "eval_loss", NOW, scraped, job_label="search-t1", namespace="ml")
    assert obs.state == state
    for key, value in check.items():
        assert getattr(obs, key) == value, key


# --- one step of the study -------------------------------------------------------------------------


def obs(number, state, **kw):
    return TrialObservation(number, state, kw.pop("reason", "Training" if state == "Active" else ""), **kw)


def test_a_new_search_starts_parallelism_trials():
    step = advance(spec().tuning, [], {})
    assert [n for n, _ in step.start] == [0, 1] and [r.state for r in step.records] == ["Running", "Running"]
    assert [e[1] for e in step.events] == ["TrialStarted", "TrialStarted"]


def test_a_running_trial_without_a_job_is_started_again_and_nothing_new_is_asked():
    """Write-ahead: the records were saved, the Job was not created (the operator restarted)."""
    first = advance(spec().tuning, [], {})
    again = advance(spec().tuning, first.records, {})
    assert again.start == first.start and again.records == first.records and again.events == []


def test_finished_trials_are_told_and_replaced_within_parallelism():
    first = advance(spec().tuning, [], {})
    step = advance(spec().tuning, first.records, {
        0: obs(0, "Succeeded", value=0.5, final_uri="s3://out/search/trials/0/final/", metrics={"eval_loss": 0.5},
               final_step=20),
        1: obs(1, "Failed", reason="OOMKilled", message="out of memory")})
    states = {r.number: r.state for r in step.records}
    assert states == {0: "Complete", 1: "Failed", 2: "Running", 3: "Running"}
    assert step.records[0].user_attrs == {"final": "s3://out/search/trials/0/final/", "metrics": {"eval_loss": 0.5}}
    assert step.records[0].intermediate == {20: 0.5}  # the final value at the final step
    assert [n for n, _ in step.start] == [2, 3]
    assert [e[1] for e in step.events] == ["TrialSucceeded", "TrialFailed", "TrialStarted", "TrialStarted"]
    done = advance(spec().tuning, step.records, {2: obs(2, "Succeeded", value=0.4), 3: obs(3, "Succeeded", value=0.6)})
    assert done.start == [] and all(r.finished for r in done.records)


def test_a_trial_worse_than_the_median_is_pruned_and_its_job_stopped():
    first = advance(spec(parallelism=1).tuning, [], {})
    step = advance(spec(parallelism=1).tuning, first.records, {0: obs(0, "Active", intermediate=(5, 0.5))})
    step = advance(spec(parallelism=1).tuning, step.records, {0: obs(0, "Succeeded", value=0.3)})
    assert [n for n, _ in step.start] == [1]
    bad = advance(spec(parallelism=1).tuning, step.records, {1: obs(1, "Active", intermediate=(5, 3.0))})
    assert bad.stop == [1] and bad.records[1].state == "Pruned"
    assert ("Normal", "TrialPruned") == bad.events[0][:2] and "step 5" in bad.events[0][2]
    assert [n for n, _ in bad.start] == [2]
    # Persisted as Pruned, the Job not deleted yet (a crash in between): deleted next time.
    again = advance(spec(parallelism=1).tuning, bad.records, {1: obs(1, "Active"), 2: obs(2, "Active")})
    assert again.stop == [1] and again.start == []


def test_the_first_trials_all_failing_stops_the_search():
    records = [TrialRecord(n, {"training.learningRate": 1e-3 * (n + 1)}, "Failed") for n in range(3)]
    step = advance(spec(trials=8).tuning, records, {})
    assert step.start == [] and len(step.records) == 3
    status = derive_search_status(spec(trials=8).tuning, records, {}, previous={}, generation=1, now=NOW)
    assert status["phase"] == "Failed" and status["reason"] == "NoTrialSucceeded"


def test_enqueued_params_are_the_first_trial():
    step = advance(spec().tuning, [], {}, enqueue={"training.learningRate": 2e-4, "training.other": 3})
    assert step.start[0] == (0, {"training.learningRate": 2e-4})
    assert step.start[1][1] != {"training.learningRate": 2e-4}


# --- status ---------------------------------------------------------------------------------------


def test_status_while_searching_and_when_done():
    tuning = spec().tuning
    records = [TrialRecord(0, {"training.learningRate": 1e-3}, "Complete", 0.5, {5: 0.8},
                           user_attrs={"final": "s3://out/search/trials/0/final/", "metrics": {"eval_loss": 0.5}}),
               TrialRecord(1, {"training.learningRate": 1e-4}, "Running", None, {5: 0.9})]
    status = derive_search_status(tuning, records, {1: obs(1, "Active")}, previous={}, generation=2, now=NOW)
    assert (status["phase"], status["reason"]) == ("Running", "Searching")
    assert "best so far trial 0: eval_loss=0.5" in status["message"]
    assert status["tuning"]["progress"] == "1/4" and status["progress"]["percent"] == 25.0
    assert status["tuning"]["trials"][1] == {"number": 1, "state": "Running", "params": {"training.learningRate": 1e-4},
                                             "value": 0.9, "step": 5}
    assert "checkpoints" not in status
    ready = {c["type"]: c["status"] for c in status["conditions"]}
    assert ready["Ready"] == "True" and ready["Reconciling"] == "True" and ready["Succeeded"] == "False"

    records[1] = TrialRecord(1, {"training.learningRate": 1e-4}, "Complete", 0.3, {5: 0.9},
                             user_attrs={"final": "s3://out/search/trials/1/final/", "metrics": {"eval_loss": 0.3}})
    records += [TrialRecord(2, {"training.learningRate": 1e-2}, "Pruned", 0.2, {5: 0.2}),  # a pruned trial never wins
                TrialRecord(3, {"training.learningRate": 1e-5}, "Failed")]
    later = NOW + timedelta(minutes=5)
    done = derive_search_status(tuning, records, {}, previous=status, generation=2, now=later)
    assert (done["phase"], done["reason"]) == ("Succeeded", "Succeeded")
    assert done["checkpoints"] == {"final": "s3://out/search/trials/1/final/"}
    assert done["metrics"] == {"eval_loss": 0.3}
    assert done["tuning"]["bestTrial"] == 1 and done["tuning"]["bestValue"] == 0.3
    assert done["tuning"]["bestParams"] == {"training.learningRate": 1e-4} and done["tuning"]["progress"] == "4/4"
    assert done["startTime"] == status["startTime"] and done["completionTime"]


def test_a_stuck_trial_makes_the_search_stalled():
    tuning = spec().tuning
    records = [TrialRecord(0, {"training.learningRate": 1e-3}, "Running")]
    stuck = TrialObservation(0, "Active", "ImagePullBackOff", "image trainer:nope does not pull", stalled=True)
    status = derive_search_status(tuning, records, {0: stuck}, previous={}, generation=1, now=NOW)
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True" and status["reason"] == "ImagePullBackOff"
    assert status["message"] == "trial 0: image trainer:nope does not pull"


def test_a_suspended_search_starts_nothing_and_says_so():
    tuning = spec().tuning
    step = advance(tuning, [], {}, suspended=True)
    assert step.start == [] and step.records == []
    status = derive_search_status(tuning, [], {}, previous={}, generation=1, now=NOW, suspended=True)
    assert (status["phase"], status["reason"]) == ("Suspended", "Suspended")
    running = [TrialRecord(0, {"training.learningRate": 1e-3})]
    # A trial still training while suspended: Suspending until its Job is suspended.
    status = derive_search_status(tuning, running, {0: obs(0, "Active")}, previous={}, generation=1, now=NOW, suspended=True)
    assert (status["phase"], status["reason"]) == ("Suspended", "Suspending")
    status = derive_search_status(tuning, running, {0: TrialObservation(0, "Active", "Suspended")}, previous={},
                                  generation=1, now=NOW, suspended=True)
    assert status["reason"] == "Suspended"
    # Resumed: the running trial goes on, a second one starts.
    assert [n for n, _ in advance(tuning, running, {0: obs(0, "Active")}).start] == [1]
