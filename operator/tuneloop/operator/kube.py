"""Every Kubernetes API call the operator makes (besides kopf's own watching and patching).

Small on purpose: create a child if absent (409 Conflict means it is already there, which is
success: creation is idempotent by the children's deterministic names), patch the Job's
`suspend`, delete the Job. Failures are translated into kopf's retry semantics here, once.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Mapping

import kopf
import kubernetes
from kubernetes.client.exceptions import ApiException

FIELD_MANAGER = "tuneloop-operator"
# (connect, read) seconds: a hung API call must not hold a handler thread forever.
REQUEST_TIMEOUT = (5, 30)
RETRY_DELAY = 10

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


class Kube:
    def __init__(self, client: kubernetes.client.ApiClient | None = None):
        self.client = client or _load_client()
        self.core = kubernetes.client.CoreV1Api(self.client)
        self.batch = kubernetes.client.BatchV1Api(self.client)

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            # Raw responses: we never need the typed models, and strict model parsing of a
            # response must not turn a successful call into an error.
            response = fn(*args, _request_timeout=REQUEST_TIMEOUT, _preload_content=False, **kwargs)
            response.release_conn()
            return response.status
        except ApiException as exc:
            if exc.status in (400, 422):
                # The API refused what we built: retrying the same manifest cannot help.
                raise kopf.PermanentError(f"{what}: rejected by the API server: {exc.reason}: {exc.body}") from exc
            if exc.status in (404, 409):
                raise
            raise kopf.TemporaryError(f"{what}: {exc.status} {exc.reason}", delay=RETRY_DELAY) from exc
        except (OSError, kubernetes.client.exceptions.OpenApiException) as exc:
            raise kopf.TemporaryError(f"{what}: {exc}", delay=RETRY_DELAY) from exc

    def create(self, manifest: Mapping[str, Any]) -> bool:
        """Create a namespaced child; True if created now, False if it already existed."""
        kind, meta = manifest["kind"], manifest["metadata"]
        creators = {
            "ConfigMap": self.core.create_namespaced_config_map,
            "Service": self.core.create_namespaced_service,
            "Job": self.batch.create_namespaced_job,
        }
        what = f"create {kind} {meta['namespace']}/{meta['name']}"
        try:
            self._call(what, creators[kind], meta["namespace"], dict(manifest), field_manager=FIELD_MANAGER)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise kopf.TemporaryError(f"{what}: {exc.status} {exc.reason}", delay=RETRY_DELAY) from exc
        log.info("Created %s %s/%s", kind, meta["namespace"], meta["name"])
        return True

    def patch_job(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        try:
            self._call(f"patch Job {namespace}/{name}", self.batch.patch_namespaced_job, name, namespace, dict(patch),
                       field_manager=FIELD_MANAGER, _content_type="application/merge-patch+json")
        except ApiException as exc:  # 404/409: gone or changed meanwhile; the next pass looks again
            raise kopf.TemporaryError(f"patch Job {namespace}/{name}: {exc.status} {exc.reason}", delay=1) from exc

    def delete_job(self, namespace: str, name: str) -> bool:
        """Delete the Job and (in the background) its pods; False if it was already gone."""
        try:
            self._call(f"delete Job {namespace}/{name}", self.batch.delete_namespaced_job, name, namespace,
                       propagation_policy="Background")
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise kopf.TemporaryError(f"delete Job {namespace}/{name}: {exc.status} {exc.reason}", delay=RETRY_DELAY) from exc
        return True
