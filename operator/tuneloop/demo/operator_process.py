"""`tuneloop-operator` in a subprocess, started, killed (SIGKILL) or stopped like a pod.

Shared by `tuneloop demo` and the end-to-end tests: the real operator, logging to a file,
healthy once its liveness probe answers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tuneloop.demo.ports import free_port

# Quick status and scrape passes: a laptop demo and the tests want to see progress at once.
FAST_PASSES = {"TUNELOOP_STATUS_INTERVAL": "0.3", "TUNELOOP_SCRAPE_INTERVAL": "0.5", "TUNELOOP_SCRAPE_TIMEOUT": "1"}


class OperatorProcess:
    def __init__(self, kubeconfig: str | os.PathLike, namespace: str, log_dir: Path, *, name: str = "operator",
                 priority: int | None = None, verbose: bool = True, cwd: str | os.PathLike | None = None, **env: str):
        self.kubeconfig = str(kubeconfig)
        self.namespace = namespace
        self.log_dir = Path(log_dir)
        self.name = name
        self.priority = priority  # None: standalone; a number: peering with that priority
        self.verbose = verbose
        self.cwd = cwd
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout: float = 30.0) -> None:
        for _ in range(3):  # a free port can be taken by another process before we bind it
            try:
                return self._start(timeout)
            except AssertionError:
                if "address already in use" not in self.log_tail():
                    raise
                self.kill()
        raise AssertionError(f"operator could not bind its ports:\n{self.log_tail()}")

    def _start(self, timeout: float) -> None:
        self.starts += 1
        self.port = free_port()
        self.metrics_port = free_port()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.log_dir / f"{self.name}-{self.starts}.log"
        env = {**os.environ, "KUBECONFIG": self.kubeconfig, **FAST_PASSES, **self.env}
        peering = ["--standalone"] if self.priority is None else ["--priority", str(self.priority)]
        cmd = [sys.executable, "-m", "tuneloop.operator.main", *peering, "--namespace", self.namespace,
               "--metrics-port", str(self.metrics_port), "--liveness", f"http://127.0.0.1:{self.port}/healthz",
               *(["--verbose"] if self.verbose else [])]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"operator exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as response:
                    if response.status == 200 and self.proc.poll() is None:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"operator not healthy after {timeout}s:\n{self.log_tail()}")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return response.read().decode()

    def log(self) -> str:
        return self.log_path.read_text()

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, as when a node dies mid-flight."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"
