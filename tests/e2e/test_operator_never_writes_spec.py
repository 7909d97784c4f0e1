"""The operator never writes a FineTuneJob's (or MaintenancePolicy's) `spec`: Argo CD owns it,
and a controller that wrote it would fight every sync. Checked on every request the operator
sent to the API emulator over a job's whole life: create, run, suspend, resume, succeed,
delete. Its writes to Tuneloop objects go to `/status`, or touch only `metadata` (kopf's
finalizer and progress annotations)."""

from __future__ import annotations

import json

import pytest

from e2e.harness import Cluster, OperatorProcess, wait_for

TEST_CLIENT = "tuneloop-e2e-test"  # the test's own requests (the operator's kopf and kube.py differ)
NOW = "2025-01-01T00:00:00Z"


def body_of(request) -> dict:
    data = request.data if isinstance(request.data, dict) else None
    if data is None and request.text:
        try:
            data = json.loads(request.text)
        except ValueError:
            data = None
    return data if isinstance(data, dict) else {}


@pytest.mark.plays_controllers
def test_every_write_of_the_operator_to_tuneloop_objects_leaves_spec_alone(kube, cluster: Cluster, operator: OperatorProcess) -> None:
    if kube.emulator is None:
        pytest.skip("reads the API emulator's request log")
    cluster.api.client.user_agent = TEST_CLIENT
    cluster.create_ftj("owned")
    job = cluster.wait_job("owned-trainer")
    cluster.start_pod(job, suffix="a", created=NOW)
    cluster.job_status(job, active=1, ready=1, startTime=NOW)
    cluster.wait_phase("owned", "Running")
    cluster.api.patch(cluster.ftj_path("owned"), {"spec": {"runPolicy": {"suspend": True}}})
    wait_for(lambda: cluster.job("owned-trainer")["spec"]["suspend"] is True, what="the Job suspended by the operator")
    cluster.api.patch(cluster.ftj_path("owned"), {"spec": {"runPolicy": {"suspend": False}}})
    wait_for(lambda: cluster.job("owned-trainer")["spec"]["suspend"] is False, what="the Job resumed by the operator")
    cluster.pod_status("owned-trainer-0-a", phase="Succeeded", container={"terminated": {"exitCode": 0, "reason": "Completed"}})
    cluster.job_status(job, active=0, succeeded=1, completionTime="2025-01-01T01:00:00Z",
                       conditions=[{"type": "Complete", "status": "True", "lastTransitionTime": "2025-01-01T01:00:00Z"}])
    cluster.wait_phase("owned", "Succeeded")
    cluster.api.delete(cluster.ftj_path("owned"))
    wait_for(lambda: cluster.ftj("owned") is None, what="the FineTuneJob deleted (the operator's finalizer released)")

    requests = kube.emulator.call(lambda emulator: list(emulator))
    ours = [r for r in requests if r.namespace == cluster.ns and r.resource is not None and r.resource.group == "tuneloop.dev"
            and r.method in ("PATCH", "PUT", "POST") and r.headers.get("User-Agent") != TEST_CLIENT]
    status_writes = [r for r in ours if r.subresource == "status"]
    main_writes = [r for r in ours if r.subresource is None]
    assert status_writes and main_writes, "the operator wrote no status or no metadata: the log is not what this test thinks"
    for request in main_writes:
        assert request.method == "PATCH", f"{request.method} {request.url}: a whole-object write could reset spec"
        assert set(body_of(request)) <= {"metadata"}, f"PATCH {request.url} writes {sorted(body_of(request))}: {request.text}"
    for request in status_writes:
        assert "spec" not in body_of(request), f"PATCH {request.url}: {request.text}"
