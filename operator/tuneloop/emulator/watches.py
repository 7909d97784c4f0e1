"""The history of changes that watch streams replay and follow.

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
from typing import Any


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
