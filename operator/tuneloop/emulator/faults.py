"""Faults the emulator injects on purpose, so reliability tests can break the API (issue 13).

A real API server answers 409, 429 with Retry-After, 500, drops connections, and ends or
starves watch streams; clients must survive all of it. Each `Fault` is one rule: which
requests it matches (method, path, user agent), what it does to them, and how often:

    faults = emulator.faults            # a FaultList, empty by default (the emulator is honest)
    faults.add(Fault(method="POST", path=r"/jobs$", status=500, times=2))          # 2 x 500
    faults.add(Fault(path=r"/finetunejobs", status=429, headers={"Retry-After": "2"}))
    faults.add(Fault(path=r"/finetunejobs\\?.*watch=true", watch="end", after_events=1))
    faults.add(Fault(path=r"/finetunejobs\\?.*watch=true", watch="silence"))        # no events, no EOF
    faults.add(Fault(user_agent=r"^kopf/", skip=7, callback=kill_the_operator))    # at its 8th request

What a hit does, in this order: `callback(request)` if given (a test's hook, e.g. SIGKILL of
the client at a seeded request); then `drop` closes the connection without an answer, or
`status` answers with a kube-apiserver `Status` body (and `headers`), or `watch` changes how
a watch stream is served ("end": closed cleanly after `after_events` events; "silence": no
more events or bookmarks after `after_events`, the connection held open until the client
gives up). A hit with none of these (only a callback) is served as usual.

How often: the first `skip` matches pass, then the next `times` matches are hit (None: every
one), each with `probability` drawn from the list's own `random.Random(seed)`, so a run is
repeatable. Patterns are regular expressions: `method` must match in full, `path` is searched
in the path with its query string (`/apis/batch/v1/namespaces/ns/jobs?fieldManager=x`), and
`user_agent` is searched in the User-Agent header (kopf sends `kopf/<version>`, the
Tuneloop operator's own calls `tuneloop-operator/<version>`).

The rules are checked in the order added; the first that hits wins. Tests add rules from
their own thread (`FaultList` locks), and every hit is recorded in `faults.hits`
(time, method, path, what was done) so a test can see what really happened.
"""

from __future__ import annotations

import dataclasses
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

import kmock

WATCH_FAULTS = ("end", "silence")


@dataclasses.dataclass
class Fault:
    method: str = ".*"
    path: str = ".*"
    user_agent: str = ".*"
    status: int | None = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    message: str = "injected by the emulator's fault rules"
    drop: bool = False
    watch: Literal["end", "silence"] | None = None
    after_events: int = 0
    skip: int = 0
    times: int | None = 1
    probability: float = 1.0
    callback: Callable[[kmock.Request], None] | None = None
    matched: int = dataclasses.field(default=0, init=False)  # requests that matched the patterns
    hit: int = dataclasses.field(default=0, init=False)  # of those, the ones the fault was applied to

    def __post_init__(self) -> None:
        if self.watch is not None and self.watch not in WATCH_FAULTS:
            raise ValueError(f"Fault.watch: {self.watch!r} is not one of {WATCH_FAULTS}")
        if sum((self.drop, self.status is not None, self.watch is not None)) > 1:
            raise ValueError("Fault: give at most one of drop, status and watch")
        if self.status is not None and not 400 <= self.status <= 599:
            raise ValueError(f"Fault.status: {self.status} is not an error status (400-599)")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"Fault.probability: {self.probability} is not within [0, 1]")
        self._patterns = (re.compile(self.method), re.compile(self.path), re.compile(self.user_agent))

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hit >= self.times

    def matches(self, method: str, path_qs: str, user_agent: str) -> bool:
        method_re, path_re, agent_re = self._patterns
        return bool(method_re.fullmatch(method) and path_re.search(path_qs) and agent_re.search(user_agent))


@dataclasses.dataclass(frozen=True)
class Hit:
    at: float  # time.monotonic()
    method: str
    path: str
    action: str  # "callback", "drop", "status 429", "watch end", "watch silence"


class FaultList:
    def __init__(self, seed: int | None = 0) -> None:
        self._rules: list[Fault] = []
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self.hits: list[Hit] = []

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._rules.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
            self.hits.clear()

    def seed(self, seed: int | None) -> None:
        with self._lock:
            self._random.seed(seed)

    def __bool__(self) -> bool:
        return bool(self._rules)

    def select(self, request: kmock.Request) -> Fault | None:
        """The fault that hits this request (its counters advanced), or None."""
        method, path = str(getattr(request.method, "value", request.method) or ""), request.url.path_qs
        agent = request.headers.get("User-Agent", "")
        with self._lock:
            for fault in self._rules:
                if fault.exhausted or not fault.matches(method, path, agent):
                    continue
                fault.matched += 1
                if fault.matched <= fault.skip or self._random.random() >= fault.probability:
                    continue
                fault.hit += 1
                self.hits.append(Hit(time.monotonic(), method, path, describe(fault)))
                return fault
        return None


def describe(fault: Fault) -> str:
    if fault.drop:
        return "drop"
    if fault.status is not None:
        return f"status {fault.status}"
    if fault.watch is not None:
        return f"watch {fault.watch}"
    return "callback"


def status_body(fault: Fault) -> dict[str, Any]:
    """The `Status` a kube-apiserver sends with this code (retryAfterSeconds as it sets it on 429)."""
    reasons = {409: "Conflict", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable",
               504: "Timeout", 404: "NotFound", 403: "Forbidden"}
    body: dict[str, Any] = {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
                            "message": fault.message, "reason": reasons.get(fault.status or 0, "Unknown"),
                            "code": fault.status}
    retry_after = fault.headers.get("Retry-After")
    if retry_after is not None and retry_after.isdigit():
        body["details"] = {"retryAfterSeconds": int(retry_after)}
    return body
