"""The demo's view: plain lines once per change when not on a terminal; the rich view renders the same snapshot."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import yaml

from tuneloop.demo.display import LiveDisplay, PlainDisplay, make_display
from tuneloop.demo.plot import write_plot
from tuneloop.demo.story import SMALL, Recorder, Snapshot, policy_for

REPO = Path(__file__).resolve().parents[2]
NOW = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def snapshot(elapsed: float, phase: str, step: int, value: float | None, events: int) -> Snapshot:
    job = {"metadata": {"name": "ticket-router-r1", "creationTimestamp": NOW},
           "status": {"phase": phase, "progress": {"step": step, "totalSteps": 40, "percent": step * 2.5},
                      "metrics": {"train_loss": 1.5 - step / 40}}}
    status = {"phase": "Ready" if value is not None else "Retraining",
              "champion": {"revision": "r1", "modelURI": "s3://models/ticket-router/r1/final/", "metric": 0.9}}
    if value is not None:
        status["lastEvaluation"] = {"revision": "r1", "job": "ticket-router-e1", "value": value, "time": NOW}
    policy = {"metadata": {"name": "ticket-router"}, "spec": {"triggers": {"metric": {"threshold": 0.8}}}, "status": status}
    evs = [{"metadata": {"uid": f"u{i}"}, "type": "Warning" if i else "Normal", "reason": f"Reason{i}", "message": "m",
            "involvedObject": {"kind": "MaintenancePolicy", "name": "ticket-router"}} for i in range(events)]
    return Snapshot(elapsed, [job], policy, evs, "s3://models/ticket-router/r1/final/")


def test_plain_lines_say_each_change_once() -> None:
    out = io.StringIO()
    display = PlainDisplay(out)
    display.update(snapshot(1, "Running", 4, None, 1))
    display.update(snapshot(2, "Running", 5, None, 1))  # same quarter, same event: nothing new
    display.update(snapshot(3, "Running", 12, 0.42, 2))
    lines = out.getvalue().splitlines()
    assert sum("ftj/ticket-router-r1: Running" in line for line in lines) == 2
    assert sum("event:" in line for line in lines) == 2
    assert any("accuracy 0.420 (BELOW threshold 0.8)" in line for line in lines)
    assert sum("isvc/ticket-router serves" in line for line in lines) == 1


def test_not_a_terminal_gets_plain_lines() -> None:
    assert isinstance(make_display(), PlainDisplay)  # pytest captures stdout: not a tty


def test_live_view_renders_a_snapshot() -> None:
    display = LiveDisplay()
    display.console.file = io.StringIO()
    display.update(snapshot(3, "Running", 12, 0.42, 2))
    display.close()
    assert "ticket-router-r1" in display.console.file.getvalue()


def test_policy_gets_the_demo_endpoint_and_budget() -> None:
    doc = yaml.safe_load((REPO / "examples/demo/policy.yaml").read_text())
    out = policy_for(doc, "http://127.0.0.1:1234", SMALL)
    template = out["spec"]["jobTemplate"]["spec"]
    assert template["storage"]["endpoint"] == "http://127.0.0.1:1234"
    assert template["training"]["epochs"] == SMALL.epochs and doc["spec"]["jobTemplate"]["spec"]["training"]["epochs"] == 4


def test_plot_is_a_png(tmp_path: Path) -> None:
    recorder = Recorder()
    recorder.record(snapshot(1, "Running", 4, 0.95, 0))
    recorder.record(snapshot(2, "Running", 8, 0.3, 0))
    summary = {"threshold": 0.8, "shiftAt": 1.5, "evaluations": [{"revision": "r1", "value": 0.95, "elapsed": 1.0}],
               "revisions": [{"revision": "r2", "gateMetric": 0.93, "promotedAt": NOW, "promotedElapsed": 3.0}]}
    path = write_plot(tmp_path / "demo.png", recorder.loss, summary)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
