"""Watch streams: the history of changes they replay, and `follow()`, which streams them.

A watch resumes from a resourceVersion in the past (kopf lists, then watches from the list's
resourceVersion, and reconnects from the last event it saw), so each resource keeps a
bounded log of its recent changes. kmock's `aiobus.Bus` only delivers what is put after a
consumer subscribes, hence this log. A watch older than the log gets 410 Gone, as from a
real server whose watch cache has moved on.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from tuneloop.emulator import errors

if TYPE_CHECKING:
    from tuneloop.emulator.store import ObjectStore


@dataclasses.dataclass(frozen=True)
class Change:
    resource_version: int
    type: str  # ADDED, MODIFIED, DELETED
    object: dict[str, Any]
    previous: dict[str, Any] | None  # the object before a MODIFIED, to see selectors stop matching


class ChangeLog:
    def __init__(self, limit: int) -> None:
        self._changes: collections.deque[Change] = collections.deque()
        self._limit = limit
        self._wakeup = asyncio.Event()
        self.horizon = 0  # changes up to this resourceVersion are forgotten

    @property
    def wakeup(self) -> asyncio.Event:
        """Set at the next change. Take it *before* reading `since()` so nothing is missed."""
        return self._wakeup

    def append(self, change: Change) -> None:
        if len(self._changes) >= self._limit:
            self.horizon = self._changes.popleft().resource_version
        self._changes.append(change)
        self.notify()

    def since(self, resource_version: int) -> list[Change]:
        newer: list[Change] = []
        for change in reversed(self._changes):
            if change.resource_version <= resource_version:
                break
            newer.append(change)
        newer.reverse()
        return newer

    def notify(self) -> None:
        self._wakeup.set()
        self._wakeup = asyncio.Event()


class WatchHub:
    def __init__(self, *, limit: int) -> None:
        self._logs: dict[Any, ChangeLog] = {}
        self._limit = limit
        self.closed = False

    def log(self, resource: Any) -> ChangeLog:
        if resource not in self._logs:
            self._logs[resource] = ChangeLog(self._limit)
        return self._logs[resource]

    def publish(self, resource: Any, change: Change) -> None:
        self.log(resource).append(change)

    def close(self) -> None:
        """End every watch stream (before the HTTP server stops, or it waits for them)."""
        self.closed = True
        for log in self._logs.values():
            log.notify()


async def follow(
        hub: WatchHub, store: ObjectStore, resource: Any, namespace: str | None,
        matches: Callable[[dict[str, Any]], bool], since: int | None, *, api_version: str, kind: str,
        timeout: float | None, bookmark_interval: float | None, send_initial_events: bool,
) -> AsyncIterator[dict[str, Any]]:
    """The events of one watch request, until its timeout, the client leaving, or `hub.close()`.

    `since` None (no resourceVersion, or "0") starts with the current objects as ADDED;
    `send_initial_events` ends those with a BOOKMARK annotated `k8s.io/initial-events-end`,
    as kopf's `initial_streaming` setting expects.
    """
    def bookmark(resource_version: int, initial_events_end: bool = False) -> dict[str, Any]:
        metadata: dict[str, Any] = {"resourceVersion": str(resource_version)}
        if initial_events_end:
            metadata["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"type": "BOOKMARK", "object": {"apiVersion": api_version, "kind": kind, "metadata": metadata}}

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout if timeout else None
    log = hub.log(resource)
    if since is None or send_initial_events:
        last = store.resource_version
        for obj in store.objects(resource, namespace):
            if matches(obj):
                yield {"type": "ADDED", "object": obj}
        if send_initial_events:
            yield bookmark(last, initial_events_end=True)
    else:
        last = since

    while not hub.closed:
        wakeup = log.wakeup
        if last < log.horizon:
            message = f"too old resource version: {last} ({log.horizon})"
            yield {"type": "ERROR", "object": errors.expired_status(message)}
            return
        changes = log.since(last)
        for change in changes:
            last = change.resource_version
            if (event := watch_event(change, matches)) is not None:
                yield event
        if changes:
            continue  # more may have come while the consumer was busy

        now = loop.time()
        if deadline is not None and now >= deadline:
            return
        waits = [t for t in (deadline - now if deadline is not None else None, bookmark_interval) if t]
        try:
            await asyncio.wait_for(wakeup.wait(), timeout=min(waits) if waits else None)
        except TimeoutError:
            # Quiet for a while: a bookmark tells the client it is still alive (kopf
            # reconnects after `inactivity_timeout` without one) and how far it has seen.
            if bookmark_interval and (deadline is None or loop.time() < deadline) and not log.since(last):
                last = store.resource_version
                yield bookmark(last)


def watch_event(change: Change, matches: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    """The event a selective watch sees: an object that starts (stops) matching a label
    selector is ADDED (DELETED) for that watch, as the real watch cache reports it."""
    now = matches(change.object)
    if change.type == "MODIFIED":
        before = change.previous is not None and matches(change.previous)
        kind = "MODIFIED" if now and before else "ADDED" if now else "DELETED" if before else None
    else:
        kind = change.type if now else None
    return {"type": kind, "object": change.object} if kind else None
