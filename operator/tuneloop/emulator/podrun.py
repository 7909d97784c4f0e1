"""What the local kubelet and Job controller share: one pod's processes and a Job's memory.

`PodRun` is a pod this node runs (its object as last written, its container processes);
`JobState` is what the Job controller keeps per Job between passes. See kubelet.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

INDEX_KEY = "batch.kubernetes.io/job-completion-index"
JOB_NAME_KEYS = ("batch.kubernetes.io/job-name", "job-name")
UID_KEYS = ("batch.kubernetes.io/controller-uid", "controller-uid")
HOST_ENV = ("PATH", "LANG", "LC_ALL", "VIRTUAL_ENV", "PYTHONPATH", "LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")
FALLBACK_LINES, FALLBACK_BYTES, MESSAGE_BYTES = 80, 2048, 4096
NODE_IP = "127.0.0.1"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value).timestamp()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ConfigError(Exception):
    """The pod cannot start yet (CreateContainerConfigError): a Secret or ConfigMap is missing."""


class DnsPending(ConfigError):
    """A pod DNS name the container uses does not resolve yet: its start waits (no status)."""


@dataclass
class ContainerRun:
    name: str
    proc: subprocess.Popen
    log_path: Path
    termination_path: Path
    fallback_to_logs: bool
    started_at: str = field(default_factory=now_rfc3339)
    finished_at: str | None = None
    exit_code: int | None = None

    def poll(self) -> int | None:
        if self.exit_code is None and self.proc.poll() is not None:
            code = self.proc.returncode
            self.exit_code = 128 - code if code < 0 else code  # killed by signal N: 128+N, like runc
            self.finished_at = now_rfc3339()
        return self.exit_code

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)  # its own session: the children (torchrun workers) too
            except ProcessLookupError:
                pass

    def message(self) -> str:
        try:
            text = self.termination_path.read_bytes()[:MESSAGE_BYTES].decode(errors="replace")
        except OSError:
            text = ""
        if not text.strip() and self.fallback_to_logs and self.exit_code:
            try:
                lines = self.log_path.read_bytes().splitlines()[-FALLBACK_LINES:]
            except OSError:
                lines = []
            text = b"\n".join(lines)[-FALLBACK_BYTES:].decode(errors="replace")
        return text

    def terminated(self) -> dict[str, Any]:
        return {
            "exitCode": self.exit_code,
            "reason": "Completed" if self.exit_code == 0 else "Error",
            "message": self.message(),
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "containerID": f"local://{self.proc.pid}",
        }


@dataclass
class PodRun:
    """A pod this kubelet created and runs: its object's identity and its processes."""

    namespace: str
    name: str
    uid: str
    job_uid: str
    index: int | None
    job: dict[str, Any]
    pod: dict[str, Any]
    workdir: tempfile.TemporaryDirectory
    containers: list[ContainerRun] = field(default_factory=list)
    config_error: str | None = None
    kill_deadline: float | None = None
    delete_when_gone: bool = False
    stopped_by_controller: bool = False  # suspended or finished: not counted (no tracking finalizer)
    reported: str = "Pending"
    created: float = field(default_factory=time.monotonic)
    waiting_dns: bool = False  # a DNS name it uses does not resolve yet (DnsPending)

    @property
    def started(self) -> bool:
        return bool(self.containers)

    def exited(self) -> bool:
        return self.started and all(c.poll() is not None for c in self.containers)

    def alive(self) -> bool:
        return self.started and not self.exited()

    def terminate(self, grace: float) -> None:
        if self.kill_deadline is None:
            self.kill_deadline = time.monotonic() + grace
            for container in self.containers:
                container.signal(signal.SIGTERM)

    def enforce_grace(self) -> None:
        if self.kill_deadline is not None and time.monotonic() >= self.kill_deadline:
            for container in self.containers:
                container.signal(signal.SIGKILL)


@dataclass
class JobState:
    """What the controller keeps per Job between passes."""

    counted: set[str] = field(default_factory=set)  # pod uids already in status.succeeded/failed
    host_ports: dict[int, int] = field(default_factory=dict)
    next_start: float = 0.0  # pod_backoff: no new pod before this (monotonic)
    backoff: float = 0.0
    adopted: bool = False
    events: dict[str, tuple[str, int]] = field(default_factory=dict)  # FailedCreate message -> (Event name, count)


