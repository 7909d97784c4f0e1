"""Ctrl-C (SIGINT) or SIGTERM during `tuneloop demo` stops everything: the operator, the training pod, the threads."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tuneloop.demo.ports import wait_for
from tuneloop.demo.runtime import processes_of

REPO = Path(__file__).resolve().parents[2]


def as_from_a_terminal() -> None:
    """SIGINT at its default, as in a terminal. A background job of a non-interactive shell
    (`pytest ... &`) inherits SIGINT ignored, and Python then keeps ignoring it: Ctrl-C would
    never reach the demo and the test would fail for the way it was started."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stopping_while_training_leaves_nothing_running(tmp_path: Path, signum: int) -> None:
    workdir = tmp_path / "work"
    log = tmp_path / "demo.log"
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    with open(log, "w") as out:
        proc = subprocess.Popen(["tuneloop", "demo", "--small", "--plain", "--workdir", str(workdir)], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=as_from_a_terminal)
    try:
        # The operator and at least one training pod (a grandchild, in its own session) are up.
        wait_for(lambda: proc.poll() is None and "ftj/ticket-router-r1: Running" in log.read_text(), timeout=180,
                 interval=0.5, what=f"the first revision to run; log:\n{log.read_text() if log.exists() else ''}")
        assert len(processes_of(workdir)) >= 2
        proc.send_signal(signum)
        assert proc.wait(90) == 128 + signum, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert "interrupted; stopping everything" in log.read_text()
    assert processes_of(workdir) == []
