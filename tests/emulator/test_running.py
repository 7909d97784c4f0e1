"""Starting and stopping: the command line, and the background-thread API."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import kubernetes
import yaml

from tuneloop.emulator import BackgroundEmulator

from .conftest import GROUP, VERSION, WIDGET_CRD


def test_command_line_serves_crds_and_writes_a_kubeconfig(tmp_path) -> None:
    (tmp_path / "crds").mkdir()
    (tmp_path / "crds" / "widgets.yaml").write_text(yaml.safe_dump(WIDGET_CRD))
    kubeconfig = tmp_path / "kubeconfig"
    process = subprocess.Popen(
        [sys.executable, "-m", "tuneloop.emulator", "--port", "0", "--kubeconfig", str(kubeconfig),
         "--crds", str(tmp_path / "crds"), "--crds", str(tmp_path / "missing")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert "Kubernetes API emulator at http://127.0.0.1:" in line and "(1 CRDs)" in line, line
        client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        custom = kubernetes.client.CustomObjectsApi(client)
        assert custom.list_namespaced_custom_object(GROUP, VERSION, "default", "widgets")["items"] == []
        client.close()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    assert "missing" in process.stderr.read()  # a missing CRD path is a warning, not a failure


def test_background_emulator_stops_cleanly() -> None:
    emulator = BackgroundEmulator().start()
    kubeconfig, port = emulator.kubeconfig, int(emulator.url.rsplit(":", 1)[1])
    config = yaml.safe_load(kubeconfig.read_text())
    assert config["clusters"][0]["cluster"]["server"] == emulator.url
    emulator.stop()
    assert not kubeconfig.exists()  # its own temporary kubeconfig is removed
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0  # nothing listens any more


def test_stop_ends_open_watches(tmp_path) -> None:
    with BackgroundEmulator(kubeconfig=tmp_path / "kubeconfig") as emulator:
        core = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(str(emulator.kubeconfig)))
        stream = core.list_namespaced_config_map("default", watch=True, _preload_content=False)
    assert stream.read() == b""  # the server ended the stream instead of waiting for it
    assert (tmp_path / "kubeconfig").exists()  # a kubeconfig the caller placed is theirs to keep
