"""A search's lifecycle with the test playing the Job controller and the kubelet (issue 14):
trial Jobs at most `parallelism` at once, intermediate values scraped from the trials' metrics
endpoint, a bad trial pruned (its Job deleted), the study surviving an operator restart
without repeating or losing a trial, the best trial's model as the result, and
`kubectl get ftj` showing trials done/total.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from e2e.harness import REPO, Cluster, OperatorProcess, wait_for
from e2e import test_finetunejob_lifecycle as lifecycle

KUBECTL = shutil.which("kubectl") or next((str(p) for p in (REPO / ".tools/bin/kubectl", Path("/work/main/.tools/bin/kubectl"))
                                           if p.exists()), None)
DONE = "2026-12-01T01:00:00Z"
trainer_metrics = lifecycle.trainer_metrics  # the stand-in metrics endpoint fixture


def eval_series(job: str, namespace: str, step: int, value: float) -> str:
    labels = f'job="{job}",namespace="{namespace}"'
    return (f'tuneloop_trainer_eval_metric{{{labels},metric="eval_loss"}} {value}\n'
            f"tuneloop_trainer_eval_step{{{labels}}} {step}\n"
            f"tuneloop_trainer_step{{{labels}}} {step + 1}\n")


def page_of(series: dict[str, str]) -> str:
    lines = sorted("".join(series.values()).splitlines())
    metric = [line for line in lines if line.startswith("tuneloop_trainer_eval_metric")]
    steps = [line for line in lines if line.startswith("tuneloop_trainer_eval_step")]
    current = [line for line in lines if line.startswith("tuneloop_trainer_step")]
    return ("# TYPE tuneloop_trainer_eval_metric gauge\n" + "\n".join(metric) + "\n"
            "# TYPE tuneloop_trainer_eval_step gauge\n" + "\n".join(steps) + "\n"
            "# TYPE tuneloop_trainer_step gauge\n" + "\n".join(current) + "\n")


def succeed(cluster: Cluster, job: dict, pod: str, output: str, number: int, value: float) -> None:
    report = {"step": 10, "totalSteps": 10, "metrics": {"train_loss": 0.1, "eval_loss": value, "accuracy": 0.99},
              "validation": {"eval_loss": value}, "checkpoints": {"final": f"{output}trials/{number}/final/"}}
    cluster.pod_status(pod, phase="Succeeded",
                       container={"terminated": {"exitCode": 0, "reason": "Completed", "message": json.dumps(report)}})
    cluster.job_status(job, active=0, succeeded=1, completionTime=DONE,
                       conditions=[{"type": "Complete", "status": "True", "lastTransitionTime": DONE}])


def trials_table(cluster: Cluster) -> dict[int, dict]:
    return {row["number"]: row for row in cluster.status("search").get("tuning", {}).get("trials", [])}


@pytest.mark.plays_controllers
def test_search_prunes_survives_a_restart_and_ends_with_the_best_trial(
        cluster: Cluster, operator: OperatorProcess, trainer_metrics: tuple[int, dict], kubeconfig: str, tmp_path: Path) -> None:
    port, page = trainer_metrics
    series: dict[str, str] = {}
    output = "s3://models/out/demo/"
    ftj = cluster.create_ftj("search", training={"epochs": 1, "evalEverySteps": 5}, tuning={
        "objective": {"metric": "eval_loss"},
        "searchSpace": [{"path": "training.learningRate", "low": 1e-5, "high": 1e-2, "log": True}],
        "trials": 3, "parallelism": 2, "pruner": {"type": "median", "startupTrials": 1}, "seed": 7})
    t0, t1 = cluster.wait_job("search-t0-trainer"), cluster.wait_job("search-t1-trainer")
    assert cluster.job("search-t2-trainer") is None, "parallelism 2"
    assert cluster.job("search-trainer") is None
    assert [r["uid"] for r in t0["metadata"]["ownerReferences"]] == [ftj["metadata"]["uid"]]
    cluster.wait_phase("search", "Pending", reason="StartingTrials")

    # Trial 0 evaluates at step 5 (scraped into the study), then finishes with eval_loss 0.30.
    cluster.start_pod(t0, suffix="a", metrics_port=port)
    cluster.job_status(t0, active=1, ready=1)
    series["t0"] = eval_series("search-t0", cluster.ns, 5, 0.35)
    page["text"] = page_of(series)
    cluster.wait_phase("search", "Running", reason="Searching")
    wait_for(lambda: trials_table(cluster).get(0, {}).get("step") == 5, what="trial 0's intermediate value in status")
    succeed(cluster, t0, "search-t0-trainer-0-a", output, 0, 0.30)
    wait_for(lambda: trials_table(cluster).get(0, {}).get("state") == "Complete", what="trial 0 complete")
    t2 = cluster.wait_job("search-t2-trainer")
    # kopf posts Events from a queue that a stop drops: the three TrialStarted are out first.
    wait_for(lambda: cluster.event_reasons("search").count("TrialStarted") == 3, what="three TrialStarted Events")

    # The operator restarts: the study is rebuilt from its ConfigMap, nothing asked again.
    operator.stop()
    restarted = OperatorProcess(kubeconfig, cluster.ns, tmp_path / "restarted")
    restarted.start()
    try:
        # Trial 1 is far worse than trial 0 at the same step: pruned, its Job deleted.
        cluster.start_pod(t1, suffix="a", metrics_port=port)
        cluster.job_status(t1, active=1, ready=1)
        series["t1"] = eval_series("search-t1", cluster.ns, 5, 9.0)
        page["text"] = page_of(series)
        wait_for(lambda: trials_table(cluster).get(1, {}).get("state") == "Pruned", what="trial 1 pruned")
        wait_for(lambda: cluster.job("search-t1-trainer") is None or cluster.job("search-t1-trainer")["metadata"].get("deletionTimestamp"),
                 what="trial 1's Job deleted")
        cluster.wait_event("search", "TrialPruned")

        # Trial 2 wins.
        cluster.start_pod(t2, suffix="a", metrics_port=port)
        cluster.job_status(t2, active=1, ready=1)
        succeed(cluster, t2, "search-t2-trainer-0-a", output, 2, 0.20)
        status = cluster.wait_phase("search", "Succeeded", timeout=20)
        reasons = cluster.wait_events("search", {"TrialPruned", "Succeeded"})  # before the stop drops them
    finally:
        restarted.stop()

    assert status["tuning"]["progress"] == "3/3" and status["tuning"]["bestTrial"] == 2
    assert status["tuning"]["bestValue"] == 0.2
    assert [(row["number"], row["state"]) for row in status["tuning"]["trials"]] == [(0, "Complete"), (1, "Pruned"), (2, "Complete")]
    assert status["checkpoints"]["final"] == f"{output}trials/2/final/"
    assert status["metrics"]["eval_loss"] == 0.2
    # Exactly three trials ever: the restart neither repeated nor lost one.
    names = sorted(j["metadata"]["name"] for j in cluster.api.list(f"/apis/batch/v1/namespaces/{cluster.ns}/jobs"))
    assert names == ["search-t0-trainer", "search-t2-trainer"]
    records = json.loads(cluster.config_map("search-study")["data"]["trials.json"])
    assert [r["state"] for r in records] == ["Complete", "Pruned", "Complete"]
    assert records[0]["intermediate"] == {"5": 0.35, "10": 0.3}  # scraped, then the final value at the final step
    assert reasons.count("TrialStarted") == 3

    if KUBECTL:  # `kubectl get ftj` prints the Trials column
        out = subprocess.run([KUBECTL, "--kubeconfig", kubeconfig, "get", "ftj", "-n", cluster.ns], capture_output=True,
                             text=True, check=True).stdout
        header, row = out.splitlines()[:2]
        assert "TRIALS" in header.split() and "3/3" in row.split(), out


@pytest.mark.plays_controllers
def test_an_invalid_search_fails_naming_the_field_and_creates_nothing(cluster: Cluster, operator: OperatorProcess) -> None:
    cluster.create_ftj("bad", training={"method": "full", "evalEverySteps": 5}, tuning={
        "objective": {"metric": "eval_loss"}, "searchSpace": [{"path": "training.lora.r", "low": 4, "high": 8}]})
    status = cluster.wait_phase("bad", "Failed", reason="InvalidSpec")
    assert "spec.tuning.searchSpace[0]" in status["message"] and "method" in status["message"], status["message"]
    assert cluster.config_map("bad-study") is None and cluster.job("bad-t0-trainer") is None


@pytest.mark.plays_controllers
def test_a_suspended_search_starts_no_trial_until_resumed(cluster: Cluster, operator: OperatorProcess) -> None:
    cluster.create_ftj("paused", runPolicy={"suspend": True}, training={"evalEverySteps": 5}, tuning={
        "objective": {"metric": "eval_loss"}, "trials": 2, "parallelism": 2,
        "searchSpace": [{"path": "training.batchSize", "choices": [4, 8]}]})
    cluster.wait_phase("paused", "Suspended", reason="Suspended")
    assert cluster.job("paused-t0-trainer") is None
    cluster.api.patch(cluster.ftj_path("paused"), {"spec": {"runPolicy": {"suspend": False}}})
    t0, t1 = cluster.wait_job("paused-t0-trainer"), cluster.wait_job("paused-t1-trainer")
    assert t0["spec"]["suspend"] is False and t1["spec"]["suspend"] is False
    cluster.wait_phase("paused", "Pending", reason="StartingTrials")
    # Suspended again while the trials exist: their Jobs are suspended.
    cluster.api.patch(cluster.ftj_path("paused"), {"spec": {"runPolicy": {"suspend": True}}})
    wait_for(lambda: all(cluster.job(f"paused-t{n}-trainer")["spec"]["suspend"] for n in (0, 1)), what="trial Jobs suspended")
    cluster.wait_phase("paused", "Suspended")


@pytest.mark.plays_controllers
def test_a_trial_job_deleted_behind_the_operators_back_is_created_again(cluster: Cluster, operator: OperatorProcess) -> None:
    cluster.create_ftj("lost", training={"evalEverySteps": 5}, tuning={
        "objective": {"metric": "eval_loss"}, "trials": 1, "pruner": {"type": "none"},
        "searchSpace": [{"path": "training.batchSize", "choices": [4, 8]}]})
    first = cluster.wait_job("lost-t0-trainer")
    cluster.api.delete(f"/apis/batch/v1/namespaces/{cluster.ns}/jobs/lost-t0-trainer")
    again = wait_for(lambda: (j := cluster.job("lost-t0-trainer")) and j["metadata"]["uid"] != first["metadata"]["uid"] and j,
                     timeout=20, what="trial 0's Job created again")
    assert again["spec"]["template"]["spec"]["volumes"] == first["spec"]["template"]["spec"]["volumes"]
    records = json.loads(cluster.config_map("lost-study")["data"]["trials.json"])
    assert [(r["number"], r["state"]) for r in records] == [(0, "Running")], "the same trial, not a new one"
