"""A small JSON client for the Kubernetes API, shared by the local kubelet and the e2e tests.

Plain JSON over the kubernetes client's connection (auth, TLS and proxies from the
kubeconfig) instead of its typed `*Api` classes: those push every object through generated
models, which is slow and can drop fields they do not know (custom resources, newer fields).
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping
from urllib.parse import urlencode

import kubernetes

# (connect, read) seconds: a hung call must fail, not hang a test or the kubelet's loop.
REQUEST_TIMEOUT = (5, 30)


class ApiError(Exception):
    def __init__(self, status: int, body: str):
        super().__init__(f"{status}: {body[:500]}")
        self.status = status
        self.body = body

    @property
    def message(self) -> str:
        """The Status body's message (the words the API server refused with)."""
        try:
            return str(json.loads(self.body).get("message") or self.body)
        except (ValueError, AttributeError):
            return self.body


def resource_path(api_version: str, plural: str, namespace: str | None = None, name: str | None = None,
                  sub: str | None = None) -> str:
    """`/api/v1/namespaces/ns/pods/name/status` and friends."""
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"
    return path + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")


class JsonApi:
    """GET/LIST/POST/PATCH/DELETE of plain dicts; errors raised as ApiError with the status."""

    def __init__(self, kubeconfig: str | os.PathLike | None = None):
        config = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(kubeconfig) if kubeconfig else None, client_configuration=config)
        self.client = kubernetes.client.ApiClient(config)

    def request(self, method: str, path: str, body: Any = None, *, query: Mapping[str, str] | None = None,
                content_type: str = "application/json") -> Any:
        if query:
            path = f"{path}?{urlencode(query)}"
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        method, url, headers, body, _ = self.client.param_serialize(
            method=method, resource_path=path, header_params=headers, body=body, auth_settings=["BearerToken"])
        response = self.client.call_api(method, url, headers, body, _request_timeout=REQUEST_TIMEOUT)
        response.read()
        text = response.data.decode() if response.data else ""
        if response.status >= 400:
            raise ApiError(response.status, text)
        return json.loads(text) if text else None

    def get(self, path: str) -> Any:
        """The object, or None when it does not exist."""
        try:
            return self.request("GET", path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, path: str, **query: str) -> list[dict]:
        return self.request("GET", path, query=query or None)["items"]

    def create(self, path: str, body: Mapping[str, Any]) -> dict:
        return self.request("POST", path, dict(body))

    def patch(self, path: str, body: Mapping[str, Any]) -> dict:
        return self.request("PATCH", path, dict(body), content_type="application/merge-patch+json")

    def delete(self, path: str, **query: str) -> Any:
        """The server's answer, or None when the object was already gone."""
        try:
            return self.request("DELETE", path, query=query or None)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def close(self) -> None:
        self.client.close()
