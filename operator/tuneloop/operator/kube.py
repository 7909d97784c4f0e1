"""Every Kubernetes API call the operator makes (besides kopf's own watching and patching).

Small on purpose: create a child if absent (409 Conflict means it is already there, which is
success: creation is idempotent by the children's deterministic names), patch the Job's
`suspend`, delete the Job. Failures are translated into kopf's retry semantics here, once.

Plain JSON over the kubernetes client's connection (auth, TLS, proxies from the kubeconfig)
rather than its typed `*Api` methods: those coerce our dicts through pydantic models, which
costs time and could silently drop a field the models do not know.
"""

from __future__ import annotations

import json
import logging
import os
from importlib import metadata
from typing import Any, Mapping
from urllib.parse import urlencode

import kopf
import kubernetes
import urllib3


def _version() -> str:
    try:
        return metadata.version("tuneloop")
    except metadata.PackageNotFoundError:
        return "dev"


FIELD_MANAGER = "tuneloop-operator"
# Who we are in the API server's audit log and APF (and to the emulator's fault rules).
USER_AGENT = f"{FIELD_MANAGER}/{_version()}"
# (connect, read) seconds: a hung API call must not hold a handler thread forever.
REQUEST_TIMEOUT = (5, 30)
RETRY_DELAY = 10
# Kind -> (API prefix, plural) of the children we create.
PATHS = {"ConfigMap": ("/api/v1", "configmaps"), "Service": ("/api/v1", "services"), "Job": ("/apis/batch/v1", "jobs"),
         "FineTuneJob": ("/apis/tuneloop.dev/v1alpha1", "finetunejobs"),
         "MaintenancePolicy": ("/apis/tuneloop.dev/v1alpha1", "maintenancepolicies"),
         "Workload": ("/apis/kueue.x-k8s.io/v1beta1", "workloads"), "Event": ("/api/v1", "events"),
         "JobSet": ("/apis/jobset.x-k8s.io/v1alpha2", "jobsets")}
# The kinds a caller may pass to the generic methods (create, read, patch, delete): our children.
CHILD_KINDS = ("ConfigMap", "Service", "Job", "FineTuneJob", "JobSet")
# Methods that reach objects of any kind, the MaintenancePolicy's promotion targets: what they
# may touch is granted by the chart's `promotionTargetRules` value, never by the base RBAC
# (tests/helm/test_rbac_matches_code.py reads every other method's access from its paths).
TARGET_METHODS = frozenset({"object_path", "read_target", "patch_target"})

log = logging.getLogger(__name__)


def _load_client() -> kubernetes.client.ApiClient:
    """In a pod: the ServiceAccount; elsewhere: $KUBECONFIG or ~/.kube/config (as kopf does)."""
    config = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=config)
    except kubernetes.config.ConfigException:
        # Read $KUBECONFIG now: the client's default was fixed when it was imported.
        kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=config)
    client = kubernetes.client.ApiClient(config)
    client.user_agent = USER_AGENT
    return client


class Forbidden(kopf.TemporaryError):
    """403: retried, and shown in status by callers that can (only an administrator can fix it)."""


def resource_path(kind: str, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
    prefix, plural = PATHS[kind]
    return f"{prefix}/namespaces/{namespace}/{plural}" + (f"/{name}" if name else "") + (f"/{subresource}" if subresource else "")


class Kube:
    def __init__(self, client: kubernetes.client.ApiClient | None = None):
        self.client = client or _load_client()
        self._plurals: dict[tuple[str, str], str] = {}

    def _request(self, what: str, method: str, path: str, body: Any = None, *, query: Mapping[str, str] | None = None,
                 content_type: str = "application/json", ok: tuple[int, ...] = ()) -> int:
        """The HTTP status (2xx or one of `ok`); anything else raised as a kopf error."""
        return self._call(what, method, path, body, query=query, content_type=content_type, ok=ok)[0]

    def _call(self, what: str, method: str, path: str, body: Any = None, *, query: Mapping[str, str] | None = None,
              content_type: str = "application/json", ok: tuple[int, ...] = ()) -> tuple[int, bytes]:
        """(HTTP status, body) for 2xx or one of `ok`; anything else raised as a kopf error."""
        if query:
            path = f"{path}?{urlencode(query)}"
        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            method, url, headers, body, _ = self.client.param_serialize(
                method=method, resource_path=path, header_params=headers, body=body, auth_settings=["BearerToken"])
            response = self.client.call_api(method, url, headers, body, _request_timeout=REQUEST_TIMEOUT)
            response.read()
        except (OSError, urllib3.exceptions.HTTPError, kubernetes.client.exceptions.OpenApiException) as exc:
            raise kopf.TemporaryError(f"{what}: {exc}", delay=RETRY_DELAY) from exc
        status = response.status
        if 200 <= status < 300 or status in ok:
            return status, response.data or b""
        detail = _message(response.data)
        if status in (400, 422):
            # The API refused what we built: retrying the same manifest cannot help.
            raise kopf.PermanentError(f"{what}: rejected by the API server ({status}): {detail}")
        if status == 403:
            # RBAC (or OwnerReferencesPermissionEnforcement on blockOwnerDeletion): retried,
            # but loudly, since only an administrator can fix it (issue 9).
            log.error("%s: forbidden (403): %s; check the operator's RBAC (helm/tuneloop templates)", what, detail)
            raise Forbidden(f"{what}: forbidden: {detail}", delay=RETRY_DELAY)
        if status == 429:
            # API Priority and Fairness says when to come back: never sooner (issue 13).
            delay = _retry_after(response.getheader("Retry-After"))
            log.warning("%s: throttled (429); retrying in %ss", what, delay)
            raise kopf.TemporaryError(f"{what}: throttled (429): {detail}", delay=delay)
        raise kopf.TemporaryError(f"{what}: {status}: {detail}", delay=RETRY_DELAY)

    def create(self, manifest: Mapping[str, Any]) -> bool:
        """Create a namespaced child; True if created now, False if it already existed."""
        kind, meta = manifest["kind"], manifest["metadata"]
        what = f"create {kind} {meta['namespace']}/{meta['name']}"
        status = self._request(what, "POST", resource_path(kind, meta["namespace"]), dict(manifest),
                               query={"fieldManager": FIELD_MANAGER}, ok=(409,))
        if status == 409:
            return False
        log.info("Created %s %s/%s", kind, meta["namespace"], meta["name"])
        return True

    def create_or_read(self, manifest: Mapping[str, Any]) -> dict[str, Any] | None:
        """Create a namespaced child: None if created now, else the object already there (on
        409), for the caller to check whose it is: a name can be held by a predecessor's
        child the garbage collector has not removed yet, or by someone else's (issue 9)."""
        kind, meta = manifest["kind"], manifest["metadata"]
        what = f"create {kind} {meta['namespace']}/{meta['name']}"
        status, _ = self._call(what, "POST", resource_path(kind, meta["namespace"]), dict(manifest),
                               query={"fieldManager": FIELD_MANAGER}, ok=(409,))
        if status != 409:
            log.info("Created %s %s/%s", kind, meta["namespace"], meta["name"])
            return None
        status, data = self._call(f"read {kind} {meta['namespace']}/{meta['name']}", "GET",
                                  resource_path(kind, meta["namespace"], meta["name"]), ok=(404,))
        if status == 404:  # collected between our two calls: the next pass creates it
            return {"metadata": {"name": meta["name"], "deletionTimestamp": "gone"}}
        return json.loads(data)

    def read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """GET one of our kinds; None if there is none."""
        status, data = self._call(f"read {kind} {namespace}/{name}", "GET", resource_path(kind, namespace, name), ok=(404,))
        return None if status == 404 else json.loads(data)

    def patch(self, kind: str, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        self._request(f"patch {kind} {namespace}/{name}", "PATCH", resource_path(kind, namespace, name), dict(patch),
                      query={"fieldManager": FIELD_MANAGER}, content_type="application/merge-patch+json")

    def patch_finetunejob_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Merge patch of the status subresource, for the timers: an API error here is our
        TemporaryError and the timer retries, where a failed patch of kopf's own ends a timer
        for good (kopf/_core/engines/daemons.py `_runner`: forever_stopped; issue 13)."""
        self._request(f"patch FineTuneJob {namespace}/{name} status", "PATCH", resource_path("FineTuneJob", namespace, name, "status"),
                      {"status": dict(status)}, query={"fieldManager": FIELD_MANAGER},
                      content_type="application/merge-patch+json")

    def patch_policy_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """The MaintenancePolicy's status, for its timer, as `patch_finetunejob_status` and for the
        same reason: kopf's own patch failing after a timer stops that policy's timer for good."""
        self._request(f"patch MaintenancePolicy {namespace}/{name} status", "PATCH",
                      resource_path("MaintenancePolicy", namespace, name, "status"), {"status": dict(status)},
                      query={"fieldManager": FIELD_MANAGER}, content_type="application/merge-patch+json")

    def set_workload_active(self, namespace: str, job_uid: str, active: bool) -> bool:
        """Set `spec.active` of the Kueue Workload of the Job with this uid; False when Kueue
        has not made it yet (or is not installed): try again later."""
        from tuneloop.operator.builders import LABEL_KUEUE_JOB_UID

        status, data = self._call(f"list Kueue Workloads in {namespace}", "GET", resource_path("Workload", namespace),
                                  query={"labelSelector": f"{LABEL_KUEUE_JOB_UID}={job_uid}"}, ok=(404,))
        items = json.loads(data).get("items") or [] if status != 404 else []
        for workload in items:
            name = workload["metadata"]["name"]
            self._request(f"patch Workload {namespace}/{name}", "PATCH", resource_path("Workload", namespace, name),
                          {"spec": {"active": active}},
                          query={"fieldManager": FIELD_MANAGER}, content_type="application/merge-patch+json")
        return bool(items)

    def failed_create_events(self, namespace: str, job_uid: str) -> list[dict[str, Any]]:
        """The Job controller's `FailedCreate` Events for the Job with this uid, oldest first:
        the pods the API server refused (a missing ServiceAccount or PriorityClass, quota, Pod
        Security). They are in no pod, since no pod was made (issue 9)."""
        _, data = self._call(f"list Events of Job {job_uid} in {namespace}", "GET", resource_path("Event", namespace),
                             query={"fieldSelector": f"involvedObject.uid={job_uid},reason=FailedCreate"})
        items = json.loads(data or b"{}").get("items") or []
        return sorted(items, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")

    def patch_job(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        self._request(f"patch Job {namespace}/{name}", "PATCH", resource_path("Job", namespace, name), dict(patch),
                      query={"fieldManager": FIELD_MANAGER}, content_type="application/merge-patch+json")

    def delete_job(self, namespace: str, name: str, *, uid: str | None = None, foreground: bool = False) -> bool:
        """Delete the Job and its pods; False if it was already gone (or, given `uid`, replaced).

        Foreground: the Job stays (with a deletionTimestamp) until its pods are gone, so a
        Job re-created under the same name never runs beside the old pods.
        """
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}} if uid else None
        status = self._request(f"delete Job {namespace}/{name}", "DELETE", resource_path("Job", namespace, name), body,
                               query={"propagationPolicy": "Foreground" if foreground else "Background"}, ok=(404, 409))
        return status not in (404, 409)

    # --- for the MaintenancePolicy controller: its children and any promotion target ---------

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete a child (its own children in the background); False if it was already gone."""
        status = self._request(f"delete {kind} {namespace}/{name}", "DELETE", resource_path(kind, namespace, name),
                               query={"propagationPolicy": "Background"}, ok=(404,))
        return status != 404

    def patch_or_create(self, kind: str, namespace: str, name: str, patch: Mapping[str, Any], what: str) -> None:
        """JSON merge patch of one of our kinds; on 404, create it with the patch as its content."""
        status = self._request(what, "PATCH", resource_path(kind, namespace, name), dict(patch),
                               query={"fieldManager": FIELD_MANAGER}, content_type="application/merge-patch+json", ok=(404,))
        if status == 404:
            prefix, _ = PATHS[kind]
            create = {"apiVersion": prefix.removeprefix("/api/").removeprefix("/apis/"), "kind": kind,
                      "metadata": {"name": name, "namespace": namespace}, **patch}
            self._request(what, "POST", resource_path(kind, namespace), create, query={"fieldManager": FIELD_MANAGER})

    def jobset_served(self) -> bool:
        """Whether the cluster serves JobSets (jobset.x-k8s.io/v1alpha2): API discovery."""
        prefix, _ = PATHS["JobSet"]
        return self.read_target(prefix) is not None

    # --- promotion targets of any kind (TARGET_METHODS): access granted by a chart value --------

    def read_target(self, path: str) -> dict | None:
        """GET a JSON object (a promotion target, or API discovery); None on 404."""
        status, data = self._call(f"get {path}", "GET", path, ok=(404,))
        return None if status == 404 else json.loads(data or b"{}")

    def object_path(self, api_version: str, kind: str, namespace: str, name: str) -> str:
        """The URL path of any namespaced object, its plural found by API discovery (cached)."""
        key = (api_version, kind)
        if key not in self._plurals:
            prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            found = self.read_target(prefix) or {}
            plural = next((r["name"] for r in found.get("resources", ()) if r.get("kind") == kind and "/" not in r["name"]), None)
            if plural is None:
                raise kopf.TemporaryError(f"{api_version} {kind} is not served by the API server (is its CRD installed?)",
                                          delay=RETRY_DELAY)
            self._plurals[key] = f"{prefix}/namespaces/{{namespace}}/{plural}"
        return self._plurals[key].format(namespace=namespace) + f"/{name}"

    def patch_target(self, path: str, patch: Mapping[str, Any], what: str) -> None:
        """JSON merge patch of any object (custom kinds too), by its path from `object_path`."""
        self._request(what, "PATCH", path, dict(patch), query={"fieldManager": FIELD_MANAGER},
                      content_type="application/merge-patch+json")


def _retry_after(value: str | None) -> float:
    """Seconds from a 429's Retry-After (kube-apiserver sends whole seconds); RETRY_DELAY
    without one. At least one second, so a `Retry-After: 0` cannot make a busy loop."""
    try:
        return max(1.0, float(value)) if value else RETRY_DELAY
    except ValueError:
        return RETRY_DELAY


def _message(data: bytes | None) -> str:
    try:
        return json.loads(data or b"{}").get("message") or (data or b"").decode(errors="replace")[:500]
    except ValueError:
        return (data or b"").decode(errors="replace")[:500]
