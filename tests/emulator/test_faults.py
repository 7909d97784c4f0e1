"""The emulator's fault rules (faults.py): each kind of fault, its counting, and its matching."""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from tuneloop.emulator import BackgroundEmulator
from tuneloop.emulator.faults import Fault


@pytest.fixture()
def faults(emulator: BackgroundEmulator) -> Iterator[Any]:
    faults = emulator.emulator.faults
    faults.clear()
    yield faults
    faults.clear()


def request(emulator: BackgroundEmulator, method: str, path: str, body: Any = None,
            agent: str = "test/1") -> tuple[int, dict[str, str], Any]:
    url = urllib.parse.urlparse(emulator.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers={"Content-Type": "application/json", "User-Agent": agent})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read() or b"null")
    finally:
        conn.close()


def cm(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}


def test_status_fault_answers_the_next_k_matching_requests_then_stops(emulator, faults, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    faults.add(Fault(method="POST", path=r"/configmaps", status=500, times=2))
    assert request(emulator, "GET", path)[0] == 200  # a GET does not match
    first, second, third = (request(emulator, "POST", path, cm(f"c{i}")) for i in range(3))
    assert [first[0], second[0], third[0]] == [500, 500, 201]
    assert first[2]["kind"] == "Status" and first[2]["code"] == 500 and first[2]["reason"] == "InternalError"
    # The failed creates never happened.
    assert [i["metadata"]["name"] for i in request(emulator, "GET", path)[2]["items"]] == ["c2"]
    assert [h.action for h in faults.hits] == ["status 500", "status 500"]


def test_429_carries_retry_after_in_the_header_and_the_status(emulator, faults, namespace: str) -> None:
    faults.add(Fault(path=rf"/namespaces/{namespace}/", status=429, headers={"Retry-After": "3"}))
    status, headers, body = request(emulator, "GET", f"/api/v1/namespaces/{namespace}/configmaps")
    assert status == 429 and headers["Retry-After"] == "3"
    assert body["reason"] == "TooManyRequests" and body["details"] == {"retryAfterSeconds": 3}


def test_skip_user_agent_and_callback(emulator, faults, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    seen: list[str] = []
    faults.add(Fault(user_agent=r"^kopf/", skip=2, callback=lambda r: seen.append(r.url.path_qs)))
    for i in range(2):
        request(emulator, "GET", path, agent="kopf/1.45")
        request(emulator, "GET", path)  # another client: never counted
    assert seen == []
    status, _, _ = request(emulator, "GET", path + "?limit=1", agent="kopf/1.45")
    assert status == 200  # a callback alone does not change the answer
    assert seen == [path + "?limit=1"]
    request(emulator, "GET", path, agent="kopf/1.45")
    assert len(seen) == 1  # times=1


def test_probability_is_seeded_and_repeatable(emulator, faults, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"

    def pattern() -> list[int]:
        faults.clear()
        faults.seed(7)
        faults.add(Fault(method="GET", status=503, times=None, probability=0.5))
        return [request(emulator, "GET", path)[0] for _ in range(20)]

    first = pattern()
    assert first == pattern()
    assert 3 <= first.count(503) <= 17 and set(first) == {200, 503}


def test_drop_closes_the_connection_without_an_answer_and_does_nothing(emulator, faults, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    faults.add(Fault(method="POST", drop=True))
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError, http.client.BadStatusLine)):
        request(emulator, "POST", path, cm("dropped"))
    assert request(emulator, "GET", path)[2]["items"] == []


def test_bad_rules_are_refused() -> None:
    with pytest.raises(ValueError, match="at most one of drop, status and watch"):
        Fault(drop=True, status=500)
    with pytest.raises(ValueError, match="not an error status"):
        Fault(status=200)
    with pytest.raises(ValueError, match="Fault.watch"):
        Fault(watch="hang")  # type: ignore[arg-type]


def watch_lines(emulator: BackgroundEmulator, path: str, timeout: float) -> tuple[list[dict], str]:
    """The events of a raw watch, and how it ended: "eof" or "silent" (nothing for `timeout` s)."""
    url = urllib.parse.urlparse(emulator.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    conn.request("GET", path)
    response = conn.getresponse()
    events = []
    try:
        for line in response:
            events.append(json.loads(line))
        return events, "eof"
    except (socket.timeout, TimeoutError):
        return events, "silent"
    finally:
        conn.close()


def test_watch_end_closes_the_stream_after_n_events(emulator, faults, namespace: str) -> None:
    for i in range(3):
        request(emulator, "POST", f"/api/v1/namespaces/{namespace}/configmaps", cm(f"w{i}"))
    faults.add(Fault(path=r"configmaps\?.*watch=true", watch="end", after_events=2))
    started = time.monotonic()
    events, ended = watch_lines(emulator, f"/api/v1/namespaces/{namespace}/configmaps?watch=true&timeoutSeconds=30", 10)
    assert ended == "eof" and time.monotonic() - started < 5
    assert [e["object"]["metadata"]["name"] for e in events] == ["w0", "w1"]
    # Only the first watch: the next one is served in full (until its own timeout).
    events, ended = watch_lines(emulator, f"/api/v1/namespaces/{namespace}/configmaps?watch=true&timeoutSeconds=1", 10)
    assert ended == "eof" and len(events) == 3


def test_watch_silence_sends_nothing_more_not_even_bookmarks(emulator, faults, namespace: str) -> None:
    request(emulator, "POST", f"/api/v1/namespaces/{namespace}/configmaps", cm("s0"))
    faults.add(Fault(path=r"configmaps\?.*watch=true", watch="silence", after_events=1))
    path = f"/api/v1/namespaces/{namespace}/configmaps?watch=true&timeoutSeconds=2&allowWatchBookmarks=true"
    events, ended = watch_lines(emulator, path, 3.5)
    # The server's own timeout (2 s) would have ended an honest stream before the client's 3.5 s.
    assert ended == "silent"
    assert [e["object"]["metadata"]["name"] for e in events] == ["s0"]
