"""The demo's runtime: everything starts in one process tree, and nothing is left when it stops."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import yaml

from tuneloop.demo.runtime import BASE_MODEL_URI, SECRET, DemoRuntime, processes_of
from tuneloop.emulator.client import resource_path


def test_runtime_starts_everything_and_leaves_nothing_running(tmp_path: Path) -> None:
    threads_before = {t.ident for t in threading.enumerate()}
    with DemoRuntime(workdir=tmp_path / "demo", namespace="demo-rt") as rt:
        config = yaml.safe_load(rt.kubeconfig.read_text())
        assert rt.kubeconfig == tmp_path / "demo" / "kubeconfig"
        assert config["clusters"][0]["cluster"]["server"].startswith("http://127.0.0.1:")
        rt.wait_api()
        assert rt.api.get(resource_path("v1", "secrets", "demo-rt", SECRET))
        assert any(k.endswith("model.safetensors") for k in rt.s3.list(BASE_MODEL_URI))
        assert "tuneloop_operator" in rt.operator.metrics()
        operator_pid = rt.operator.proc.pid
        assert processes_of(tmp_path / "demo") == [operator_pid]
    assert rt.operator.proc.poll() is not None
    assert not os.path.exists(f"/proc/{operator_pid}") or _is_zombie(operator_pid)
    assert processes_of(tmp_path / "demo") == []
    left = [t.name for t in threading.enumerate() if t.ident not in threads_before and t.is_alive()]
    assert not [name for name in left if name.startswith("tuneloop")], left


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True
