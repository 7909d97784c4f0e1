"""The real Prometheus server (Debian's `prometheus`) as a test fixture: a config written to a
temporary folder, a free port, the HTTP API queried with urllib. File-based service discovery
lets a test add a target (a trainer pod's port) while Prometheus runs; Prometheus watches the
file and picks it up within a second."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrometheusServer:
    def __init__(self, folder: Path, *, static: dict[str, list[str]], file_sd: list[str] = (), rule_files: list[Path] = (),
                 interval: str = "1s"):
        self.folder = folder
        self.binary = shutil.which("prometheus")
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # honor_labels: the trainer's `job`/`namespace` and the operator's per-job `namespace`
        # are the FineTuneJob's, as with the chart's PodMonitor and ServiceMonitor.
        scrape = [{"job_name": name, "honor_labels": True, "static_configs": [{"targets": targets}]} for name, targets in static.items()]
        scrape += [{"job_name": name, "honor_labels": True, "file_sd_configs": [{"files": [str(self.sd_file(name))]}]} for name in file_sd]
        for name in file_sd:
            self.set_targets(name, [])
        config = {"global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
                  "scrape_configs": scrape, "rule_files": [str(p) for p in rule_files]}
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.proc: subprocess.Popen | None = None

    def sd_file(self, job: str) -> Path:
        return self.folder / f"{job}.targets.json"

    def set_targets(self, job: str, targets: list[str]) -> None:
        tmp = self.sd_file(job).with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": targets}]))
        tmp.replace(self.sd_file(job))  # atomic: Prometheus never reads half a file

    def start(self, timeout: float = 30) -> None:
        assert self.binary, "prometheus is missing: run .ci/setup (Debian's prometheus package)"
        self.log_path = self.folder / "prometheus.log"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen([self.binary, f"--config.file={self.folder / 'prometheus.yml'}",
                                          f"--storage.tsdb.path={self.folder / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"prometheus exited:\n{self.log_path.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready after {timeout}s:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def api(self, path: str, **params: Any) -> Any:
        """GET /api/v1/<path>; returns `data`, raises with Prometheus' error on a bad query."""
        query = urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def query_range(self, expr: str, start: float, end: float, step: float = 1.0) -> list[dict]:
        return self.api("query_range", query=expr, start=start, end=end, step=step)["result"]
