"""Free ports and bounded waits, shared by the demo runtime and the end-to-end tests."""

from __future__ import annotations

import socket
import time
from typing import Any, Callable, TypeVar

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(probe: Callable[[], T], timeout: float = 15.0, interval: float = 0.1, what: str = "condition") -> T:
    """Poll until `probe()` is truthy; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last seen: {last!r}")
