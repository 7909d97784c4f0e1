"""Kubernetes API errors injected by the emulator, survived by the real operator (issue 13).

Each test puts fault rules (tuneloop.emulator.faults) on the operator's own requests in its
namespace (told apart by User-Agent: kopf's and kube.py's), starts the operator, and checks
the end state: the Job created once, the status written. The classes: 409 Conflict, 429 with
Retry-After (and that the operator waited as long as it was told), 500, a dropped connection,
watch streams that end, and watch streams that go silent without ending.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from e2e.harness import Cluster, OperatorProcess, wait_for
from tuneloop.emulator import Fault

OPERATOR_AGENTS = r"^(kopf|tuneloop-operator)/"
KUBE_AGENT = r"^tuneloop-operator/"
NOW = "2025-01-01T00:00:00Z"


@pytest.fixture
def start_operator(kubeconfig: str, cluster: Cluster, tmp_path: Any) -> Iterator[Callable[..., OperatorProcess]]:
    """Start the operator after the test has set its faults (watches are made at start)."""
    started: list[OperatorProcess] = []

    def start(**env: str) -> OperatorProcess:
        process = OperatorProcess(kubeconfig, cluster.ns, tmp_path, name=f"operator{len(started)}", **env)
        started.append(process)
        process.start()
        return process

    yield start
    for process in started:
        process.stop()


def in_ns(cluster: Cluster, rest: str) -> str:
    return rf"/namespaces/{cluster.ns}/{rest}"


def hits(faults: Any, action: str) -> list[Any]:
    return [h for h in faults.hits if h.action == action]


def assert_one_job_and_pending(cluster: Cluster, name: str) -> dict:
    status = cluster.wait_phase(name, "Pending", timeout=30, jobName=f"{name}-trainer")
    time.sleep(1.0)  # a few status passes after it
    assert [j["metadata"]["name"] for j in cluster.jobs(name)] == [f"{name}-trainer"]
    assert cluster.config_map(f"{name}-config") is not None
    assert status["attempts"] == 0  # no pod has started yet
    return status


def test_500_on_creating_the_job_is_retried_and_the_job_made_once(cluster: Cluster, faults: Any, start_operator) -> None:
    faults.add(Fault(method="POST", path=in_ns(cluster, "jobs"), user_agent=KUBE_AGENT, status=500, times=2))
    start_operator()
    cluster.create_ftj("five")
    assert_one_job_and_pending(cluster, "five")
    assert len(hits(faults, "status 500")) == 2


def test_409_on_the_job_create_and_on_the_first_status_patch(cluster: Cluster, faults: Any, start_operator) -> None:
    # A 409 for a Job that does not exist (a name held a moment by someone, then gone), and a
    # conflict on kopf's patch of the FineTuneJob with the first status and handler progress:
    # kopf does not retry that one and waits for the object's next event, which never comes.
    faults.add(Fault(method="POST", path=in_ns(cluster, "jobs"), user_agent=KUBE_AGENT, status=409, times=1))
    faults.add(Fault(method="PATCH", path=in_ns(cluster, "finetunejobs/conflict$"), user_agent=r"^kopf/", status=409, times=1))
    start_operator()
    cluster.create_ftj("conflict")
    assert_one_job_and_pending(cluster, "conflict")
    assert len(hits(faults, "status 409")) == 2


@pytest.mark.plays_controllers
def test_409_on_the_succeeded_status_patch_is_not_lost(cluster: Cluster, faults: Any, start_operator) -> None:
    start_operator()
    cluster.create_ftj("final")
    job = cluster.wait_job("final-trainer", timeout=30)
    cluster.start_pod(job, suffix="a")
    cluster.job_status(job, active=1, ready=1, startTime=NOW)
    cluster.wait_phase("final", "Running", timeout=30)
    # On the next status write, whoever sends it (kopf's patch of a timer ended that timer for good).
    faults.add(Fault(method="PATCH", path=in_ns(cluster, "finetunejobs/final"), user_agent=OPERATOR_AGENTS, status=409, times=1))
    cluster.pod_status("final-trainer-0-a", phase="Succeeded", container={"terminated": {"exitCode": 0, "reason": "Completed"}})
    cluster.job_status(job, active=0, ready=0, succeeded=1, completionTime="2025-01-01T01:00:00Z",
                       conditions=[{"type": "Complete", "status": "True", "lastTransitionTime": "2025-01-01T01:00:00Z"}])
    status = cluster.wait_phase("final", "Succeeded", timeout=40)
    assert status["completionTime"] == "2025-01-01T01:00:00Z" and status["attempts"] == 1
    assert len(hits(faults, "status 409")) == 1


def test_429_retry_after_is_honoured_by_our_calls_and_kopfs(cluster: Cluster, faults: Any, start_operator) -> None:
    faults.add(Fault(method="POST", path=in_ns(cluster, "jobs"), user_agent=KUBE_AGENT, status=429,
                     headers={"Retry-After": "3"}, times=1))
    faults.add(Fault(method="PATCH", path=in_ns(cluster, "finetunejobs/slow"), user_agent=r"^kopf/", status=429,
                     headers={"Retry-After": "2"}, times=1))
    seen: dict[str, list[float]] = {"POST": [], "PATCH": []}
    faults.add(Fault(method="POST|PATCH", path=in_ns(cluster, r"(jobs|finetunejobs/slow)\b"), user_agent=OPERATOR_AGENTS,
                     times=None, callback=lambda request: seen[str(request.method.value)].append(time.monotonic())))
    start_operator()
    cluster.create_ftj("slow")
    assert_one_job_and_pending(cluster, "slow")
    throttled = {h.method: h.at for h in hits(faults, "status 429")}
    assert set(throttled) == {"POST", "PATCH"}
    # The next attempt of each came no sooner than the server asked. (That ours is exactly the
    # Retry-After, not our 10 s default, is tests/operator/test_kube_faults.py's.)
    post_wait = min(t for t in seen["POST"] if t > throttled["POST"]) - throttled["POST"]
    patch_wait = min(t for t in seen["PATCH"] if t > throttled["PATCH"]) - throttled["PATCH"]
    assert post_wait >= 3.0, post_wait
    assert patch_wait >= 2.0, patch_wait
    print(f"429 waits: ours {post_wait:.2f} s (Retry-After 3), kopf's {patch_wait:.2f} s (Retry-After 2)")


def test_dropped_connections_are_retried(cluster: Cluster, faults: Any, start_operator) -> None:
    faults.add(Fault(method="POST", path=in_ns(cluster, "(jobs|configmaps)"), user_agent=KUBE_AGENT, drop=True, times=2))
    start_operator()
    cluster.create_ftj("dropped")
    assert_one_job_and_pending(cluster, "dropped")
    assert len(hits(faults, "drop")) == 2


def test_watch_streams_that_end_are_reopened(cluster: Cluster, faults: Any, start_operator) -> None:
    # Every watch of FineTuneJobs and Jobs ends after its first event, five times over.
    faults.add(Fault(method="GET", path=in_ns(cluster, r"(finetunejobs|jobs)\?.*watch=true"), watch="end",
                     after_events=1, times=5))
    start_operator()
    cluster.create_ftj("ends")
    job = cluster.wait_job("ends-trainer", timeout=30)
    assert_one_job_and_pending(cluster, "ends")
    cluster.start_pod(job, suffix="a")
    cluster.job_status(job, active=1, ready=1, startTime=NOW)
    cluster.wait_phase("ends", "Running", timeout=30)
    assert len(hits(faults, "watch end")) == 5


def test_a_silent_watch_stream_is_noticed_and_reopened(cluster: Cluster, faults: Any, start_operator) -> None:
    # The first watch of FineTuneJobs stays open and says nothing: no events, no bookmarks.
    faults.add(Fault(method="GET", path=in_ns(cluster, r"finetunejobs\?.*watch=true"), watch="silence", times=1))
    start_operator(TUNELOOP_WATCH_INACTIVITY_TIMEOUT="3")
    silenced = wait_for(lambda: hits(faults, "watch silence"), timeout=20, what="the silenced watch")[0].at
    cluster.create_ftj("quiet")
    cluster.wait_job("quiet-trainer", timeout=20)  # seen only through a new watch
    noticed = time.monotonic() - silenced
    assert noticed >= 3.0, noticed  # not before the inactivity timeout: the stream was really deaf
    print(f"silent watch: the Job came {noticed:.1f} s after the stream went silent (inactivity timeout 3 s)")
    assert_one_job_and_pending(cluster, "quiet")


@pytest.mark.plays_controllers
@pytest.mark.parametrize("seed", range(int(os.environ.get("TUNELOOP_FAULT_SEEDS", "1"))))
def test_a_lifecycle_under_random_api_errors(cluster: Cluster, faults: Any, start_operator, seed: int) -> None:
    """About a quarter of the operator's requests in the namespace fail (500, 429, 409, dropped), seeded."""
    faults.seed(seed)
    every: dict[str, Any] = {"path": in_ns(cluster, ""), "user_agent": OPERATOR_AGENTS, "times": None}
    for fault in (Fault(status=500, probability=0.1, **every), Fault(drop=True, probability=0.05, **every),
                  Fault(status=429, headers={"Retry-After": "1"}, probability=0.05, **every),
                  Fault(method="POST|PATCH", status=409, probability=0.1, **every)):
        faults.add(fault)
    start_operator()
    cluster.create_ftj("noisy")
    job = cluster.wait_job("noisy-trainer", timeout=60)
    cluster.wait_phase("noisy", "Pending", timeout=60)
    cluster.start_pod(job, suffix="a")
    cluster.job_status(job, active=1, ready=1, startTime=NOW)
    cluster.wait_phase("noisy", "Running", timeout=60, attempts=1)
    cluster.pod_status("noisy-trainer-0-a", phase="Succeeded", container={"terminated": {"exitCode": 0, "reason": "Completed"}})
    cluster.job_status(job, active=0, ready=0, succeeded=1, completionTime="2025-01-01T01:00:00Z",
                       conditions=[{"type": "Complete", "status": "True", "lastTransitionTime": "2025-01-01T01:00:00Z"}])
    status = cluster.wait_phase("noisy", "Succeeded", timeout=60)
    assert status["attempts"] == 1 and status["completionTime"] == "2025-01-01T01:00:00Z"
    assert [j["metadata"]["uid"] for j in cluster.jobs("noisy")] == [job["metadata"]["uid"]]
    assert len(faults.hits) >= 2, faults.hits  # the faults really happened
