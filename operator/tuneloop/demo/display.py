"""What the demo shows while it runs: a live `rich` view in a terminal, plain lines otherwise.

The live view is `kubectl get ftj,mpol` with progress bars, the watched metric against its
threshold, what the InferenceService serves, and the Events as they happen. Plain lines (a CI
log, a pipe) say the same once per change, so a log reads as the story.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from typing import Any, TextIO

from tuneloop.demo.story import Snapshot

EVENT_LINES = 12


def event_line(event: dict[str, Any]) -> str:
    obj = event.get("involvedObject") or {}
    kind = {"FineTuneJob": "ftj", "MaintenancePolicy": "mpol"}.get(obj.get("kind"), obj.get("kind", "?"))
    return f"{event.get('type', 'Normal'):7} {event.get('reason', ''):20} {kind}/{obj.get('name', '')}: {event.get('message', '')}"


def event_key(event: dict[str, Any]) -> str:
    meta = event.get("metadata") or {}
    return f"{meta.get('uid') or meta.get('name')}/{event.get('count', 1)}"


def watched(snap: Snapshot) -> tuple[float | None, float | None, str | None]:
    """(value, threshold, revision) of the policy's watched metric."""
    spec = (snap.policy or {}).get("spec") or {}
    threshold = ((spec.get("triggers") or {}).get("metric") or {}).get("threshold")
    last = snap.status.get("lastEvaluation") or {}
    return last.get("value"), threshold, last.get("revision")


def age(stamp: str | None) -> str:
    if not stamp:
        return ""
    seconds = int((datetime.now(timezone.utc) - datetime.fromisoformat(stamp.replace("Z", "+00:00"))).total_seconds())
    return f"{seconds}s" if seconds < 120 else f"{seconds // 60}m{seconds % 60:02d}s"


class PlainDisplay:
    """One line per change: notes, FineTuneJob phase and progress quarters, policy phase and
    champion, the watched metric, served model, Events."""

    def __init__(self, out: TextIO | None = None):
        self.out = out or sys.stdout
        self.seen: dict[str, Any] = {}
        self.events: set[str] = set()
        self.elapsed = 0.0

    def print(self, text: str) -> None:
        print(f"[{self.elapsed:6.1f}s] {text}", file=self.out, flush=True)

    def note(self, text: str) -> None:
        self.print(f"demo: {text}")

    def changed(self, key: str, value: Any) -> bool:
        if self.seen.get(key) == value:
            return False
        self.seen[key] = value
        return True

    def update(self, snap: Snapshot) -> None:
        self.elapsed = snap.elapsed
        for job in snap.jobs:
            name, status = job["metadata"]["name"], job.get("status") or {}
            progress = status.get("progress") or {}
            quarter = int(float(progress.get("percent") or 0) // 25)
            if self.changed(f"ftj/{name}", (status.get("phase"), quarter)):
                loss = (status.get("metrics") or {}).get("train_loss")
                self.print(f"ftj/{name}: {status.get('phase', 'Pending')} step {progress.get('step', 0)}/"
                           f"{progress.get('totalSteps', '?')} ({progress.get('percent', 0)}%)"
                           + (f" loss {loss:.4f}" if loss is not None else ""))
        status = snap.status
        if snap.policy and self.changed("mpol", (status.get("phase"), snap.champion)):
            champion = status.get("champion") or {}
            self.print(f"mpol/{snap.policy['metadata']['name']}: {status.get('phase', 'Pending')}, champion "
                       f"{champion.get('revision', 'none')}" + (f" ({champion['modelURI']})" if champion else ""))
        value, threshold, revision = watched(snap)
        if value is not None and self.changed("watched", (revision, value, status.get("lastEvaluation", {}).get("job"))):
            verdict = "BELOW" if threshold is not None and value < threshold else "within"
            self.print(f"evaluation of {revision} on the fresh tickets: accuracy {value:.3f} ({verdict} threshold {threshold})")
        if snap.served and self.changed("served", snap.served):
            self.print(f"isvc/ticket-router serves {snap.served}")
        for event in snap.events:
            key = event_key(event)
            if key not in self.events:
                self.events.add(key)
                self.print(f"event: {event_line(event)}")

    def close(self) -> None:
        pass


class LiveDisplay:
    """A `rich.live.Live` view redrawn on every snapshot."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console()
        self.notes: list[str] = []
        self.live = Live(console=self.console, refresh_per_second=4, transient=False)
        self.live.start()

    def note(self, text: str) -> None:
        self.notes.append(text)
        self.console.print(f"[bold cyan]demo:[/] {text}")

    def update(self, snap: Snapshot) -> None:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        jobs = Table(title="kubectl get ftj", title_justify="left", expand=True)
        for column in ("NAME", "PHASE", "PROGRESS", "STEP", "LOSS", "TEST ACC", "AGE"):
            jobs.add_column(column, ratio=2 if column == "PROGRESS" else None)
        for job in snap.jobs:
            status = job.get("status") or {}
            progress, metrics = status.get("progress") or {}, status.get("metrics") or {}
            percent = float(progress.get("percent") or 0)
            loss, acc = metrics.get("train_loss"), metrics.get("accuracy")
            jobs.add_row(job["metadata"]["name"], phase_text(status.get("phase")),
                         ProgressBar(total=100, completed=percent, width=30),
                         f"{progress.get('step', 0)}/{progress.get('totalSteps', '?')}",
                         "" if loss is None else f"{loss:.4f}", "" if acc is None else f"{acc:.3f}",
                         age(job["metadata"].get("creationTimestamp")))
        policy = Table(title="kubectl get mpol", title_justify="left", expand=True)
        for column in ("NAME", "PHASE", "CHAMPION", "GATE METRIC", "WATCHED ACCURACY vs THRESHOLD", "NEXT EVALUATION"):
            policy.add_column(column)
        if snap.policy:
            status = snap.status
            champion = status.get("champion") or {}
            value, threshold, revision = watched(snap)
            if value is None:
                meter: Any = Text("not evaluated yet", style="dim")
            else:
                below = threshold is not None and value < threshold
                meter = Group(ProgressBar(total=1.0, completed=value, width=30,
                                          complete_style="red" if below else "green"),
                              Text(f"{revision}: {value:.3f} {'<' if below else '>='} {threshold}",
                                   style="bold red" if below else "green"))
            metric = champion.get("metric")
            policy.add_row(snap.policy["metadata"]["name"], phase_text(status.get("phase")),
                           champion.get("revision", "none"), "" if metric is None else f"{metric:.3f}", meter,
                           (status.get("nextEvaluation") or "")[11:19])
        served = Text.assemble(("isvc/ticket-router serves ", "bold"), (snap.served or "nothing yet", "magenta"))
        events = Table(title="Events", title_justify="left", expand=True, show_header=False)
        events.add_column("event")
        for event in snap.events[-EVENT_LINES:]:
            warning = event.get("type") == "Warning"
            events.add_row(Text(event_line(event), style="yellow" if warning else ""))
        header = Text(f"tuneloop demo: {snap.elapsed:5.0f}s", style="bold")
        self.live.update(Group(header, jobs, policy, served, events))

    def close(self) -> None:
        self.live.stop()


def phase_text(phase: str | None) -> Any:
    from rich.text import Text

    styles = {"Succeeded": "green", "Ready": "green", "Running": "cyan", "Retraining": "cyan", "Evaluating": "cyan",
              "Failed": "red", "Degraded": "bold red", "Stalled": "red"}
    return Text(phase or "Pending", style=styles.get(phase or "", "dim"))


def make_display(plain: bool | None = None) -> LiveDisplay | PlainDisplay:
    """Live in a terminal, plain lines when stdout is not one (or when asked)."""
    if plain is None:
        plain = not sys.stdout.isatty()
    return PlainDisplay() if plain else LiveDisplay()
