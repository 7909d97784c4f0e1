"""SIGKILL of the operator at seeded random points of its reconciles (issue 13).

The emulator counts the operator's own API requests (kopf's and kube.py's, told apart by
their User-Agent) and at a seeded k-th one SIGKILLs the operator from inside the emulator,
either before serving that request (it never happened: the connection is dropped) or after
(it happened, and the operator never saw the answer). Then the world moves on while the
operator is down (the test plays the Job controller and the kubelet), and the operator is
started again: KILLS_PER_SEED times per seed, then a last run without faults. Four
FineTuneJobs are at different stages meanwhile: one created between kills (a two-node job:
ConfigMap, Service and Job), one running, one whose first pod is OOMKilled and retried, one
that finishes.

Pass, per seed: exactly one Job, one ConfigMap (and one Service for the two-node job) per
FineTuneJob, the Job never re-created (its first uid is its last), and each status complete
and consistent: the expected phase, `attempts` counted once per retry, observedGeneration,
jobName, each condition type once.

The default suite runs FAULT_SEEDS seeds (2); the full run is in docs/reliability.md:

    TUNELOOP_FAULT_SEEDS=20 python3 -m pytest tests/e2e/test_operator_kill_faults.py -q -p no:cacheprovider -s
"""

from __future__ import annotations

import os
import random
import signal
import time
from typing import Any

import pytest

from e2e.harness import Cluster, OperatorProcess, resource_path
from tuneloop.emulator import Fault
from tuneloop.operator.handlers import WRITTEN_TRUSTED_FOR

FAULT_SEEDS = int(os.environ.get("TUNELOOP_FAULT_SEEDS", "2"))
KILLS_PER_SEED = 3
# kopf's own requests (watches, patches, events) and kube.py's (children).
OPERATOR_AGENTS = r"^(kopf|tuneloop-operator)/"
# Only requests in the test's namespace count (not API discovery or the CRD and namespace
# lists at start): its lists and watches, then the reconciles. A start with these jobs makes
# about 30 of them in its first seconds (`requests_in_last_start` in the printed history),
# so kills land anywhere from the first list to the children and status writes.
MAX_KILL_AT = 32
NOW = "2025-01-01T00:00:00Z"

# FineTuneJob -> the stages the test's Job controller and kubelet take it through, and the
# status it must end with.
PLANS: dict[str, tuple[list[str], dict[str, Any]]] = {
    "run": (["running"], {"phase": "Running", "attempts": 1}),
    "retry": (["running", "retried"], {"phase": "Running", "attempts": 2}),
    "done": (["running", "succeeded"], {"phase": "Succeeded", "attempts": 1}),
    "early": ([], {"phase": "Pending", "attempts": 1}),  # created between kills, two nodes
}


def advance(cluster: Cluster, job: dict, stage: str) -> None:
    """One step of the Job controller and kubelet."""
    if stage == "running":
        cluster.start_pod(job, suffix="a")
        cluster.job_status(job, active=1, ready=1, startTime=NOW)
    elif stage == "retried":
        cluster.pod_status(f"{job['metadata']['name']}-0-a", phase="Failed",
                           container={"terminated": {"exitCode": 137, "reason": "OOMKilled"}})
        cluster.start_pod(job, suffix="b")
        cluster.job_status(job, active=1, ready=1, failed=1)
    elif stage == "succeeded":
        cluster.pod_status(f"{job['metadata']['name']}-0-a", phase="Succeeded",
                           container={"terminated": {"exitCode": 0, "reason": "Completed"}})
        cluster.job_status(job, active=0, ready=0, succeeded=1, completionTime="2025-01-01T01:00:00Z",
                           conditions=[{"type": "Complete", "status": "True", "lastTransitionTime": "2025-01-01T01:00:00Z"}])


def labelled(cluster: Cluster, plural: str, ftj: str) -> list[dict]:
    return cluster.api.list(resource_path("v1", plural, cluster.ns), labelSelector=f"tuneloop.dev/finetunejob={ftj}")


def check_invariants(cluster: Cluster, first_uids: dict[str, str], history: list) -> None:
    """What must hold at any moment: never two Jobs (or ConfigMaps, Services), never a re-created Job."""
    for ftj in PLANS:
        jobs = cluster.jobs(ftj)
        assert len(jobs) <= 1, (ftj, [j["metadata"]["name"] for j in jobs], history)
        assert len(labelled(cluster, "configmaps", ftj)) <= 1, (ftj, history)
        assert len(labelled(cluster, "services", ftj)) <= 1, (ftj, history)
        if jobs:
            uid = first_uids.setdefault(ftj, jobs[0]["metadata"]["uid"])
            assert jobs[0]["metadata"]["uid"] == uid, (f"{ftj}: its Job was re-created", history)


@pytest.mark.plays_controllers
@pytest.mark.parametrize("seed", range(FAULT_SEEDS))
def test_operator_killed_at_random_requests_never_duplicates_children_or_loses_status(
        cluster: Cluster, faults: Any, kubeconfig: str, tmp_path: Any, seed: int) -> None:
    rng = random.Random(seed)
    operator = OperatorProcess(kubeconfig, cluster.ns, tmp_path)
    for ftj in ("run", "retry", "done"):
        cluster.create_ftj(ftj)
    done_stages: dict[str, int] = {ftj: 0 for ftj in PLANS}
    first_uids: dict[str, str] = {}
    history: list[dict[str, Any]] = []

    def kill(request: Any) -> None:
        if operator.proc is not None:
            operator.proc.send_signal(signal.SIGKILL)

    def step_world() -> None:
        for ftj, (stages, _) in PLANS.items():
            job = cluster.job(f"{ftj}-trainer")
            if job is not None and done_stages[ftj] < len(stages):
                advance(cluster, job, stages[done_stages[ftj]])
                done_stages[ftj] += 1

    try:
        for kill_number in range(KILLS_PER_SEED):
            at, drop = rng.randint(1, MAX_KILL_AT), rng.random() < 0.5
            fault = faults.add(Fault(path=rf"/namespaces/{cluster.ns}/", user_agent=OPERATOR_AGENTS, skip=at - 1, times=1,
                                     drop=drop, callback=kill))
            if kill_number == 1:
                cluster.create_ftj("early", resources={"nodes": 2, "gpusPerNode": 4})
            try:
                operator.start()
            except AssertionError:
                assert operator.proc is not None and operator.proc.poll() == -signal.SIGKILL, operator.log_tail()
            deadline = time.monotonic() + 10
            while operator.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            hit = f"{faults.hits[-1].method} {faults.hits[-1].path}" if fault.hit else None
            operator.kill()  # if it stayed under `at` requests for 10 s: killed now, by time
            faults.clear()
            history.append({"kill": kill_number, "at": at, "drop": drop, "request": hit})
            check_invariants(cluster, first_uids, history)
            step_world()

        # The last start: no faults (a tap counts its requests); the world finishes its plans.
        tap = faults.add(Fault(path=rf"/namespaces/{cluster.ns}/", user_agent=OPERATOR_AGENTS, times=None,
                               callback=lambda request: None))
        operator.start()
        for ftj, (stages, _) in PLANS.items():
            job = cluster.wait_job(f"{ftj}-trainer", timeout=30)
            for stage in stages[done_stages[ftj]:]:
                advance(cluster, job, stage)
                done_stages[ftj] += 1
        for ftj, (_, expected) in PLANS.items():
            cluster.wait_phase(ftj, expected["phase"], timeout=30, attempts=expected["attempts"])
        history.append({"requests_in_last_start": tap.hit})
        # Then nothing may change any more. Past WRITTEN_TRUSTED_FOR: at a restart, a change
        # handler's status patch (kopf applies it after the handler) can land after a newer
        # write of the status timer, and the timer rewrites it once its memory of that write
        # expires (found by the 20-seed run, seed 5: `attempts` back to 0 for about 10 s).
        time.sleep(WRITTEN_TRUSTED_FOR + 1.5)
        check_invariants(cluster, first_uids, history)
        for ftj, (_, expected) in PLANS.items():
            status = cluster.status(ftj)
            assert {k: status.get(k) for k in expected} == expected, (ftj, status, history)
            assert status["jobName"] == f"{ftj}-trainer"
            assert status["observedGeneration"] == cluster.ftj(ftj)["metadata"]["generation"]
            types = [c["type"] for c in status["conditions"]]
            assert len(types) == len(set(types)), (ftj, types)
            assert len(cluster.jobs(ftj)) == 1 and len(labelled(cluster, "configmaps", ftj)) == 1
            if ftj == "done":
                assert status["completionTime"] == "2025-01-01T01:00:00Z"
        assert len(labelled(cluster, "services", "early")) == 1
        assert len(labelled(cluster, "configmaps", "early")) == 1
        print(f"seed {seed}: {history}")
    finally:
        operator.stop()

