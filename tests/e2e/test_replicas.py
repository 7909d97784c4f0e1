"""Two operator replicas through kopf peering: one works, the other waits and takes over."""

from __future__ import annotations

import pytest

from pathlib import Path

from e2e.harness import Api, ApiError, Cluster, OperatorProcess, wait_for

NOW = "2025-01-01T00:00:00Z"
# kopf's own peering resource (the Helm chart installs the same); kopf writes `status` directly.
PEERING_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "kopfpeerings.kopf.dev"},
    "spec": {
        "scope": "Namespaced",
        "group": "kopf.dev",
        "names": {"kind": "KopfPeering", "plural": "kopfpeerings", "singular": "kopfpeering"},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}},
        }],
    },
}


def install_peering(api: Api, namespace: str) -> None:
    try:
        api.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", PEERING_CRD)
    except ApiError as exc:
        if exc.status != 409:
            raise
    wait_for(lambda: api.get("/apis/kopf.dev/v1"), timeout=30, what="the KopfPeering API")
    api.create(f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings",
               {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "tuneloop", "namespace": namespace}})


@pytest.mark.plays_controllers
def test_two_replicas_one_active_then_failover(cluster: Cluster, kubeconfig: str, tmp_path: Path) -> None:
    install_peering(cluster.api, cluster.ns)
    leader = OperatorProcess(kubeconfig, cluster.ns, tmp_path, name="leader", priority=20)
    standby = OperatorProcess(kubeconfig, cluster.ns, tmp_path, name="standby", priority=10)
    leader.start()
    standby.start()
    try:
        # kopf starts every replica paused until it has read the peering object; the standby
        # then stays paused (silently) while the leader's record is alive.
        cluster.create_ftj("ha")
        job = cluster.wait_job("ha-trainer")
        cluster.start_pod(job, suffix="a")
        cluster.job_status(job, active=1, ready=1, startTime=NOW)
        cluster.wait_phase("ha", "Running")
        assert "Resuming operations" not in standby.log()
        assert "ha-trainer" not in standby.log()  # the standby did nothing
        cluster.wait_events("ha", {"Created", "Started"})  # posted from a queue the stop would drop

        leader.stop()  # a graceful exit drops its peering record at once
        wait_for(lambda: "Resuming operations" in standby.log(), what="the standby to take over")
        cluster.job_status(job, active=0, succeeded=1, completionTime="2025-01-01T01:00:00Z",
                           conditions=[{"type": "Complete", "status": "True", "lastTransitionTime": "2025-01-01T01:00:00Z"}])
        cluster.wait_phase("ha", "Succeeded")
        reasons = cluster.wait_events("ha", {"Created", "Started", "Succeeded"})
        assert [r for r in reasons if r in ("Created", "Started", "Succeeded")] == ["Created", "Started", "Succeeded"]
        assert len(cluster.jobs("ha")) == 1
    finally:
        leader.stop()
        standby.stop()
