"""The API module against a tiny fake API server: 409 is success, errors map to kopf's retries."""

from __future__ import annotations

import http.server
import json
import threading
from typing import Iterator

import kopf
import kubernetes
import pytest

from tuneloop.operator.kube import Kube


@pytest.fixture
def server() -> Iterator[dict]:
    state: dict = {"responses": [], "requests": []}

    class Handler(http.server.BaseHTTPRequestHandler):
        def _reply(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            state["requests"].append((self.command, self.path, self.headers.get("Content-Type"), body))
            code = state["responses"].pop(0) if state["responses"] else 200
            data = json.dumps({"kind": "Status", "code": code} if code >= 300 else (body or {})).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_POST = do_PATCH = do_DELETE = do_GET = _reply

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    config = kubernetes.client.Configuration()
    config.host = f"http://127.0.0.1:{httpd.server_address[1]}"
    state["kube"] = Kube(kubernetes.client.ApiClient(config))
    yield state
    httpd.shutdown()


JOB = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "a-trainer", "namespace": "ml"}, "spec": {}}


def test_create_is_idempotent(server: dict) -> None:
    kube: Kube = server["kube"]
    server["responses"] = [201, 409]
    assert kube.create(JOB) is True
    assert kube.create(JOB) is False  # already there: success, never a second Job
    method, path, _, body = server["requests"][0]
    assert (method, path.split("?")[0], body) == ("POST", "/apis/batch/v1/namespaces/ml/jobs", JOB)
    assert "fieldManager=tuneloop-operator" in path


def test_create_or_read_returns_what_holds_the_name(server: dict) -> None:
    kube: Kube = server["kube"]
    server["responses"] = [201, 409, 200]
    assert kube.create_or_read(JOB) is None
    existing = kube.create_or_read(JOB)
    assert existing is not None and server["requests"][-1][0] == "GET"
    assert server["requests"][-1][1].split("?")[0] == "/apis/batch/v1/namespaces/ml/jobs/a-trainer"


@pytest.mark.parametrize("code, error", [(422, kopf.PermanentError), (400, kopf.PermanentError),
                                         (500, kopf.TemporaryError), (429, kopf.TemporaryError), (403, kopf.TemporaryError)])
def test_create_errors_map_to_kopf(server: dict, code: int, error: type) -> None:
    server["responses"] = [code]
    with pytest.raises(error):
        server["kube"].create(JOB)


def test_patch_is_a_merge_patch_and_delete_cascades(server: dict) -> None:
    kube: Kube = server["kube"]
    kube.patch_job("ml", "a-trainer", {"spec": {"suspend": True}})
    _, path, content_type, body = server["requests"][-1]
    assert content_type == "application/merge-patch+json" and body == {"spec": {"suspend": True}}
    assert kube.delete_job("ml", "a-trainer") is True
    assert "propagationPolicy=Background" in server["requests"][-1][1]
    server["responses"] = [404]
    assert kube.delete_job("ml", "a-trainer") is False


def test_unreachable_api_is_temporary() -> None:
    config = kubernetes.client.Configuration()
    config.host = "http://127.0.0.1:9"  # discard port: nothing listens
    config.retries = 0
    with pytest.raises(kopf.TemporaryError):
        Kube(kubernetes.client.ApiClient(config)).create(JOB)


def test_forbidden_is_its_own_error_so_status_can_show_it(server: dict) -> None:
    from tuneloop.operator.kube import Forbidden

    server["responses"] = [403]
    with pytest.raises(Forbidden):
        server["kube"].create_or_read(JOB)


def test_jobset_is_found_by_api_discovery(server: dict) -> None:
    """runPolicy.groupRestart: JobSet needs the jobset.x-k8s.io API (issue 9): asked by discovery."""
    kube: Kube = server["kube"]
    server["responses"] = [404, 200]
    assert kube.jobset_served() is False
    assert kube.jobset_served() is True
    assert [(m, p) for m, p, _, _ in server["requests"]] == [("GET", "/apis/jobset.x-k8s.io/v1alpha2")] * 2
