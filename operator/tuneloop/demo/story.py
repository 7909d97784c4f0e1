"""The story `tuneloop demo` plays, through the Kubernetes API and S3 only (the same calls a
user or a data pipeline would make); the operator does the rest.

1. Spring's labelled tickets are the training data (`s3://datasets/tickets/train/`), spring's
   freshly labelled ones the evaluation data (`.../fresh-labelled/`); the policy and the
   InferenceService it promotes to are applied (`examples/demo/`).
2. The policy trains revision 1 at once; its gate scores it on the fresh tickets; it becomes
   champion and the InferenceService's storageUri names its model.
3. Fresh labelled tickets arrive whose distribution has shifted (a new product, a queue that
   grew, new wording; see `examples/demo/data/generate.py`): a new batch is added to the
   training prefix and the fresh-labelled tickets are replaced.
4. The scheduled evaluation scores the champion on them: below the threshold
   (DegradationDetected); the policy retrains (RetrainTriggered) on all the training data;
   the gate scores challenger and champion on the same fresh tickets; the challenger wins and
   is promoted (ModelPromoted); the InferenceService now names revision 2's model.

`Story.run()` polls the API about once a second, hands each `Snapshot` to the display and the
`Recorder`, does step 3 when revision 1 is champion, and ends when a later revision is
champion (or fails with what went wrong: a failed or rejected revision, the time budget).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import yaml

from tuneloop.demo.runtime import DemoRuntime
from tuneloop.emulator.client import resource_path

GROUP_VERSION = "tuneloop.dev/v1alpha1"
TRAIN_PREFIX = "s3://datasets/tickets/train/"
FRESH_PREFIX = "s3://datasets/tickets/fresh-labelled/"
POLICY = "ticket-router"
ISVC_API, ISVC_PLURAL = "serving.kserve.io/v1beta1", "inferenceservices"
ISVC_FIELD = ("spec", "predictor", "model", "storageUri")


@dataclass(frozen=True)
class Budget:
    """How much training the story pays for; the small one keeps the same story for CI."""

    name: str
    epochs: int
    max_seq_length: int
    timeout: float  # seconds for the whole story


FULL = Budget("full", epochs=4, max_seq_length=64, timeout=1800)
SMALL = Budget("small", epochs=2, max_seq_length=48, timeout=1800)


class StoryFailed(Exception):
    pass


@dataclass
class Snapshot:
    """What the API says now, as the display and the recorder need it."""

    elapsed: float
    jobs: list[dict[str, Any]]
    policy: dict[str, Any] | None
    events: list[dict[str, Any]]
    served: str | None  # the InferenceService's storageUri

    @property
    def status(self) -> dict[str, Any]:
        return (self.policy or {}).get("status") or {}

    @property
    def champion(self) -> str | None:
        return (self.status.get("champion") or {}).get("revision")


class Display(Protocol):
    def note(self, text: str) -> None: ...
    def update(self, snap: Snapshot) -> None: ...


@dataclass
class Recorder:
    """Series over time for the summary and the plot."""

    loss: dict[str, list[tuple[float, int, float]]] = field(default_factory=dict)  # job -> (elapsed, step, loss)
    evaluations: list[dict[str, Any]] = field(default_factory=list)  # scheduled evaluations, in order
    notes: list[tuple[float, str]] = field(default_factory=list)
    shift_at: float | None = None
    started: float = field(default_factory=time.time)

    def record(self, snap: Snapshot) -> None:
        for job in snap.jobs:
            status = job.get("status") or {}
            step = (status.get("progress") or {}).get("step")
            loss = (status.get("metrics") or {}).get("train_loss")
            if step is None or loss is None:
                continue
            series = self.loss.setdefault(job["metadata"]["name"], [])
            if not series or series[-1][1] != step:
                series.append((snap.elapsed, int(step), float(loss)))
        last = snap.status.get("lastEvaluation")
        if last and last.get("value") is not None and all(e.get("job") != last.get("job") for e in self.evaluations):
            self.evaluations.append({**last, "elapsed": self.elapsed_of(last.get("time"), snap.elapsed)})

    def elapsed_of(self, stamp: str | None, default: float) -> float:
        if not stamp:
            return default
        return max(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() - self.started, 0.0)


def load_examples(folder: Path) -> dict[str, Any]:
    docs = [d for path in sorted(folder.glob("*.yaml")) for d in yaml.safe_load_all(path.read_text()) if d]
    by_kind = {d["kind"]: d for d in docs}
    missing = {"MaintenancePolicy", "InferenceService"} - set(by_kind)
    if missing:
        raise StoryFailed(f"{folder}: no {', '.join(sorted(missing))} manifest; the demo needs examples/demo/ as committed")
    return by_kind


def policy_for(doc: dict[str, Any], endpoint: str, budget: Budget) -> dict[str, Any]:
    """The example policy with the S3 endpoint the demo runs and the budget's training length."""
    doc = copy.deepcopy(doc)
    template = doc["spec"]["jobTemplate"]["spec"]
    template.setdefault("storage", {})["endpoint"] = endpoint
    template["training"].update(epochs=budget.epochs, maxSeqLength=budget.max_seq_length)
    return doc


class Story:
    def __init__(self, rt: DemoRuntime, examples: Path, budget: Budget, display: Display, poll: float = 1.0):
        self.rt, self.examples, self.budget, self.display, self.poll = rt, Path(examples), budget, display, poll
        self.data = self.examples / "data"
        self.recorder = Recorder()
        self.snapshots: list[Snapshot] = []

    # --- steps ------------------------------------------------------------------------------

    def seed(self) -> None:
        s3 = self.rt.s3
        for prefix in (TRAIN_PREFIX, FRESH_PREFIX):
            s3.delete_prefix(prefix)  # a real S3 may hold a previous run's files
        s3.put_bytes(TRAIN_PREFIX + "2026-05-spring.jsonl", (self.data / "base.jsonl").read_bytes())
        s3.put_bytes(FRESH_PREFIX + "2026-05-spring.jsonl", (self.data / "fresh-base.jsonl").read_bytes())
        self.note(f"spring's tickets: {lines(self.data / 'base.jsonl')} to train on under {TRAIN_PREFIX}, "
                  f"{lines(self.data / 'fresh-base.jsonl')} freshly labelled under {FRESH_PREFIX}")

    def apply(self) -> None:
        manifests = load_examples(self.examples)
        for crd in sorted((self.examples / "crds").glob("*.yaml")):
            self.rt.register_crd(crd)
        self.rt.wait_api()
        self.rt.apply(manifests["InferenceService"])
        self.rt.apply(policy_for(manifests["MaintenancePolicy"], self.rt.s3.endpoint, self.budget))
        self.note(f"applied MaintenancePolicy/{POLICY} and InferenceService/{POLICY} "
                  f"({self.budget.name} budget: {self.budget.epochs} epochs)")

    def shift(self) -> None:
        """Fresh labelled tickets arrive: a new training batch, and new evaluation tickets."""
        s3 = self.rt.s3
        s3.put_bytes(TRAIN_PREFIX + "2026-06-shifted.jsonl", (self.data / "shifted.jsonl").read_bytes())
        s3.delete_prefix(FRESH_PREFIX)
        s3.put_bytes(FRESH_PREFIX + "2026-06-shifted.jsonl", (self.data / "fresh-shifted.jsonl").read_bytes())
        self.recorder.shift_at = self.elapsed()
        self.note(f"June: {lines(self.data / 'shifted.jsonl')} new tickets (Ledger, downgrades now to cancellation, "
                  f"chat wording) added to {TRAIN_PREFIX}; the fresh-labelled tickets replaced by "
                  f"{lines(self.data / 'fresh-shifted.jsonl')} of June's")

    # --- the loop ---------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.seed()
        self.apply()
        deadline = time.monotonic() + self.budget.timeout
        shifted = False
        while True:
            snap = self.snapshot()
            self.snapshots.append(snap)
            self.recorder.record(snap)
            self.display.update(snap)
            history = {h["revision"]: h for h in snap.status.get("history") or ()}
            for revision, entry in history.items():
                if entry.get("verdict") in ("Failed", "Rejected"):
                    raise StoryFailed(f"{revision} {entry['verdict'].lower()}: {entry.get('message', '')}")
            if not shifted and snap.champion == "r1" and snap.served == history["r1"].get("modelURI"):
                self.shift()
                shifted = True
            if shifted and snap.champion not in (None, "r1") and snap.served == (snap.status.get("champion") or {}).get("modelURI"):
                return self.summary(snap)
            if time.monotonic() > deadline:
                raise StoryFailed(f"the story did not finish in {self.budget.timeout:.0f}s; policy phase "
                                  f"{snap.status.get('phase')}, champion {snap.champion}")
            time.sleep(self.poll)

    def snapshot(self) -> Snapshot:
        api, ns = self.rt.api, self.rt.namespace
        jobs = sorted(api.list(resource_path(GROUP_VERSION, "finetunejobs", ns)), key=lambda j: j["metadata"]["name"])
        policy = api.get(resource_path(GROUP_VERSION, "maintenancepolicies", ns, POLICY))
        events = [e for e in api.list(resource_path("v1", "events", ns))
                  if (e.get("involvedObject") or {}).get("kind") in ("FineTuneJob", "MaintenancePolicy")]
        events.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or e.get("firstTimestamp") or "")
        isvc = api.get(resource_path(ISVC_API, ISVC_PLURAL, ns, POLICY)) or {}
        served: Any = isvc
        for key in ISVC_FIELD:
            served = (served or {}).get(key)
        return Snapshot(self.elapsed(), jobs, policy, events, served)

    def elapsed(self) -> float:
        return time.time() - self.recorder.started

    def note(self, text: str) -> None:
        self.recorder.notes.append((self.elapsed(), text))
        self.display.note(text)

    # --- the end ------------------------------------------------------------------------------

    def summary(self, snap: Snapshot) -> dict[str, Any]:
        status = snap.status
        jobs = {j["metadata"]["name"]: j for j in snap.jobs}
        revisions = []
        for entry in status.get("history") or ():
            job = jobs.get(entry.get("job") or "") or {}
            js = job.get("status") or {}
            revisions.append({
                "revision": entry["revision"], "job": entry.get("job"), "trigger": entry.get("trigger"),
                "verdict": entry.get("verdict"), "gateMetric": entry.get("metric"),
                "championMetric": entry.get("championMetric"), "evaluationRows": entry.get("evaluationRows"),
                "trainSeconds": seconds_between(entry.get("startedAt"), entry.get("trainedAt")),
                "testAccuracy": (js.get("metrics") or {}).get("accuracy"),
                "finalTrainLoss": (js.get("metrics") or {}).get("train_loss"),
                "modelURI": entry.get("modelURI"), "promotedAt": entry.get("promotedAt"),
                "promotedElapsed": self.recorder.elapsed_of(entry["promotedAt"], 0.0) if entry.get("promotedAt") else None,
            })
        champion = status.get("champion") or {}
        degraded = next((e for e in self.recorder.evaluations
                         if e.get("revision") == "r1" and e["elapsed"] >= (self.recorder.shift_at or 0)
                         and e.get("value") is not None and e["value"] < self.threshold()), None)
        latest = revisions[-1] if revisions else {}
        return {
            "budget": self.budget.name,
            "seconds": round(snap.elapsed, 1),
            "threshold": self.threshold(),
            "metric": status.get("lastEvaluation", {}).get("metric", "accuracy"),
            "champion": champion.get("revision"),
            "championModelURI": champion.get("modelURI"),
            "served": snap.served,
            "before": degraded.get("value") if degraded else latest.get("championMetric"),
            "after": champion.get("metric"),
            "revisions": revisions,
            "evaluations": [{k: e.get(k) for k in ("time", "revision", "value", "rows", "elapsed")}
                            for e in self.recorder.evaluations],
            "shiftAt": self.recorder.shift_at,
        }

    def threshold(self) -> float:
        spec = (self.snapshots[-1].policy or {}).get("spec") or {} if self.snapshots else {}
        return float(((spec.get("triggers") or {}).get("metric") or {}).get("threshold", 0.0))


def seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return round((parse(end) - parse(start)).total_seconds(), 1)


def lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())
