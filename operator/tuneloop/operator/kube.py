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
from typing import Any, Mapping
from urllib.parse import urlencode

import kopf
import kubernetes
import urllib3

FIELD_MANAGER = "tuneloop-operator"
# (connect, read) seconds: a hung API call must not hold a handler thread forever.
REQUEST_TIMEOUT = (5, 30)
RETRY_DELAY = 10
# Kind -> (API prefix, plural) of the children we create.
PATHS = {"ConfigMap": ("/api/v1", "configmaps"), "Service": ("/api/v1", "services"), "Job": ("/apis/batch/v1", "jobs"),
         "FineTuneJob": ("/apis/tuneloop.dev/v1alpha1", "finetunejobs")}

log = logging.getLogger(__name__)


def _load_client() -> kubernetes.client.ApiClient:
    """In a pod: the ServiceAccount; elsewhere: $KUBECONFIG or ~/.kube/config (as kopf does)."""
    config = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=config)
    except kubernetes.config.ConfigException:
        # Read $KUBECONFIG now: the client's default was fixed when it was imported.
        kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=config)
    return kubernetes.client.ApiClient(config)


def resource_path(kind: str, namespace: str, name: str | None = None) -> str:
    prefix, plural = PATHS[kind]
    return f"{prefix}/namespaces/{namespace}/{plural}" + (f"/{name}" if name else "")


class Kube:
    def __init__(self, client: kubernetes.client.ApiClient | None = None):
        self.client = client or _load_client()
        self._plurals: dict[tuple[str, str], str] = {}

    def _request(self, what: str, method: str, path: str, body: Any = None, *, query: Mapping[str, str] | None = None,
                 content_type: str = "application/json", ok: tuple[int, ...] = (), into: dict | None = None) -> int:
        """The HTTP status (2xx or one of `ok`); anything else raised as a kopf error."""
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
        if into is not None:
            into["data"] = response.data
        if 200 <= status < 300 or status in ok:
            return status
        detail = _message(response.data)
        if status in (400, 422):
            # The API refused what we built: retrying the same manifest cannot help.
            raise kopf.PermanentError(f"{what}: rejected by the API server ({status}): {detail}")
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

    def patch_job(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        self._request(f"patch Job {namespace}/{name}", "PATCH", resource_path("Job", namespace, name), dict(patch),
                      query={"fieldManager": FIELD_MANAGER}, content_type="application/merge-patch+json")

    def delete_job(self, namespace: str, name: str) -> bool:
        """Delete the Job and (in the background) its pods; False if it was already gone."""
        status = self._request(f"delete Job {namespace}/{name}", "DELETE", resource_path("Job", namespace, name),
                               query={"propagationPolicy": "Background"}, ok=(404,))
        return status != 404

    # --- for the MaintenancePolicy controller: its children and any promotion target ---------

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete a child (its own children in the background); False if it was already gone."""
        status = self._request(f"delete {kind} {namespace}/{name}", "DELETE", resource_path(kind, namespace, name),
                               query={"propagationPolicy": "Background"}, ok=(404,))
        return status != 404

    def get(self, path: str) -> dict | None:
        """GET a JSON object; None on 404."""
        holder: dict[str, Any] = {}
        status = self._request(f"get {path}", "GET", path, ok=(404,), into=holder)
        return None if status == 404 else json.loads(holder["data"] or b"{}")

    def object_path(self, api_version: str, kind: str, namespace: str, name: str) -> str:
        """The URL path of any namespaced object, its plural found by API discovery (cached)."""
        key = (api_version, kind)
        if key not in self._plurals:
            prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            found = self.get(prefix) or {}
            plural = next((r["name"] for r in found.get("resources", ()) if r.get("kind") == kind and "/" not in r["name"]), None)
            if plural is None:
                raise kopf.TemporaryError(f"{api_version} {kind} is not served by the API server (is its CRD installed?)",
                                          delay=RETRY_DELAY)
            self._plurals[key] = f"{prefix}/namespaces/{{namespace}}/{plural}"
        return self._plurals[key].format(namespace=namespace) + f"/{name}"

    def merge_patch(self, path: str, patch: Mapping[str, Any], what: str, *, create: Mapping[str, Any] | None = None) -> None:
        """JSON merge patch (works for any kind, custom ones too); `create` is POSTed on 404."""
        status = self._request(what, "PATCH", path, dict(patch), query={"fieldManager": FIELD_MANAGER},
                               content_type="application/merge-patch+json", ok=(404,) if create is not None else ())
        if status == 404 and create is not None:
            self._request(what, "POST", path.rsplit("/", 1)[0], dict(create), query={"fieldManager": FIELD_MANAGER})


def _message(data: bytes | None) -> str:
    try:
        return json.loads(data or b"{}").get("message") or (data or b"").decode(errors="replace")[:500]
    except ValueError:
        return (data or b"").decode(errors="replace")[:500]
