"""End-to-end helpers that speak only the Kubernetes API (so the same tests run against the
emulator or a real cluster), and run the real operator as a subprocess.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from tuneloop.demo.operator_process import OperatorProcess as _OperatorProcess
from tuneloop.demo.ports import free_port, wait_for  # noqa: F401  (re-exported to tests)
from tuneloop.emulator.client import ApiError, JsonApi, resource_path  # noqa: F401  (re-exported to tests)

REPO = Path(__file__).resolve().parents[2]
FTJ_API = "tuneloop.dev/v1alpha1"

# The API in the tests' words: the same client the local kubelet uses.
Api = JsonApi


class OperatorProcess(_OperatorProcess):
    """The real operator (shared with `tuneloop demo`), run from the repository root."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("cwd", REPO)
        super().__init__(*args, **kwargs)


# --- object helpers -----------------------------------------------------------------------------


def finetunejob(name: str, namespace: str, **spec: Any) -> dict:
    base = {
        "task": "sequence-classification",
        "model": {"source": "s3://models/base/minilm/"},
        "dataset": {"train": "s3://data/tickets/train.csv"},
        "output": {"uri": "s3://models/out/demo/"},
        "training": {"epochs": 1, "packing": False},
        "resources": {"gpusPerNode": 0, "cpu": "1", "memory": "2Gi"},
    }
    for key, value in spec.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return {"apiVersion": FTJ_API, "kind": "FineTuneJob", "metadata": {"name": name, "namespace": namespace}, "spec": base}


class Cluster:
    """What a test does to the cluster, in the words of the test."""

    def __init__(self, api: Api, namespace: str):
        self.api, self.ns = api, namespace

    # FineTuneJobs
    def ftj_path(self, name: str | None = None, sub: str | None = None) -> str:
        return resource_path(FTJ_API, "finetunejobs", self.ns, name, sub)

    def create_ftj(self, name: str, **spec: Any) -> dict:
        return self.api.create(self.ftj_path(), finetunejob(name, self.ns, **spec))

    def ftj(self, name: str) -> dict | None:
        return self.api.get(self.ftj_path(name))

    def status(self, name: str) -> dict:
        return (self.ftj(name) or {}).get("status") or {}

    def wait_phase(self, name: str, phase: str, timeout: float = 15, **expected: Any) -> dict:
        def probe() -> dict | None:
            status = self.status(name)
            ok = status.get("phase") == phase and all(status.get(k) == v for k, v in expected.items())
            return status if ok else None
        return wait_for(probe, timeout=timeout, what=f"{name} phase {phase} {expected or ''}".strip())

    def condition(self, name: str, type_: str) -> dict:
        return next(c for c in self.status(name).get("conditions", []) if c["type"] == type_)

    def events(self, name: str, kind: str = "FineTuneJob") -> list[dict]:
        events = self.api.list(resource_path("v1", "events", self.ns))
        return [e for e in events if (e.get("involvedObject") or {}).get("name") == name
                and (e.get("involvedObject") or {}).get("kind") == kind]

    def event_reasons(self, name: str, kind: str = "FineTuneJob") -> list[str]:
        return [e["reason"] for e in sorted(self.events(name, kind), key=lambda e: e.get("firstTimestamp") or e.get("eventTime") or "")]

    def wait_event(self, name: str, reason: str, timeout: float = 10) -> dict:
        return wait_for(lambda: next((e for e in self.events(name) if e["reason"] == reason), None), timeout=timeout,
                        what=f"a {reason} event for {name}")

    def wait_events(self, name: str, reasons: set[str], timeout: float = 10, kind: str = "FineTuneJob") -> list[str]:
        """Every reason in `reasons` among the Events of the `kind` `name`: kopf posts an Event after
        the status write it reports, so a test that saw the phase may be ahead of the Event."""
        def probe() -> list[str] | None:
            seen = self.event_reasons(name, kind)
            return seen if reasons <= set(seen) else None
        return wait_for(probe, timeout=timeout, what=f"events {sorted(reasons)} for {kind} {name}")

    # Children
    def job(self, name: str) -> dict | None:
        return self.api.get(resource_path("batch/v1", "jobs", self.ns, name))

    def jobs(self, ftj: str) -> list[dict]:
        return self.api.list(resource_path("batch/v1", "jobs", self.ns), labelSelector=f"tuneloop.dev/finetunejob={ftj}")

    def wait_job(self, name: str, timeout: float = 15) -> dict:
        return wait_for(lambda: self.job(name), timeout=timeout, what=f"Job {name}")

    def config_map(self, name: str) -> dict | None:
        return self.api.get(resource_path("v1", "configmaps", self.ns, name))

    def service(self, name: str) -> dict | None:
        return self.api.get(resource_path("v1", "services", self.ns, name))

    def pods(self, ftj: str) -> list[dict]:
        return self.api.list(resource_path("v1", "pods", self.ns), labelSelector=f"tuneloop.dev/finetunejob={ftj}")

    # Playing the Job controller and the kubelet
    def job_status(self, job: dict, **status: Any) -> dict:
        return self.api.patch(resource_path("batch/v1", "jobs", self.ns, job["metadata"]["name"], "status"), {"status": status})

    def start_pod(self, job: dict, *, suffix: str, index: int = 0, phase: str = "Running", metrics_port: int | None = None,
                  container: dict | None = None, created: str | None = None, **status: Any) -> dict:
        template = copy.deepcopy(job["spec"]["template"])
        meta = job["metadata"]
        if metrics_port is not None:
            for port in template["spec"]["containers"][0]["ports"]:
                if port["name"] == "metrics":
                    port["containerPort"] = metrics_port
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{meta['name']}-{index}-{suffix}",
                "namespace": self.ns,
                "labels": {**template["metadata"]["labels"], "batch.kubernetes.io/job-name": meta["name"]},
                "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"], "uid": meta["uid"],
                                     "controller": True, "blockOwnerDeletion": True}],
            },
            "spec": template["spec"],
        }
        created_pod = self.api.create(resource_path("v1", "pods", self.ns), pod)
        return self.pod_status(created_pod["metadata"]["name"], phase=phase, container=container, **status)

    def pod_status(self, name: str, *, phase: str, container: dict | None = None, **status: Any) -> dict:
        body = {"phase": phase, "podIP": "127.0.0.1",
                "containerStatuses": [{"name": "trainer", "ready": phase == "Running", "restartCount": 0,
                                       "image": "trainer", "imageID": "", "state": container or {"running": {}}}],
                **status}
        return self.api.patch(resource_path("v1", "pods", self.ns, name, "status"), {"status": body})
