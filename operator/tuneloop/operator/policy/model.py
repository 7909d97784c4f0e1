"""The words `decide()` speaks: what it is told (`Observations` and the readings in them), what
it answers (`Action` and the children it asks for), its knobs (`Tuning`), and the
deterministic names of everything a policy creates.

Kept apart from the rules so the handlers, builders and readers can share them without
importing the rule book.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping


# Evaluation Jobs by purpose: the promotion gate, the scheduled champion run, the newData check.
GATE, CHAMPION, DATA = "gate", "champion", "data"


@dataclass(frozen=True)
class Tuning:
    """Operator-wide knobs of the rules (environment, see handlers)."""

    # Prometheus unreachable this long (first failure to now) makes the policy Stalled.
    stalled_after: float = 60.0
    backoff_base: float = 10.0
    backoff_max: float = 300.0
    # How often the newData trigger lists the bucket (a short Job each time).
    data_interval: float = 300.0


@dataclass(frozen=True)
class RevisionRun:
    """What a revision FineTuneJob's status says."""

    phase: str | None = None
    model_uri: str | None = None
    completed: str | None = None
    message: str = ""
    # status.tuning.bestParams of a revision that searched: the next retrain starts from them.
    best_params: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class EvaluationRun:
    """What an evaluation Job says: running (neither flag), succeeded with a report, or failed."""

    succeeded: bool = False
    failed: bool = False
    report: Mapping[str, Any] | None = None
    message: str = ""

    @property
    def finished(self) -> bool:
        return self.succeeded or self.failed


@dataclass(frozen=True)
class Reading:
    """The watched metric from Prometheus: a value, or the error that prevented one."""

    value: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class Observations:
    name: str
    created: datetime  # the policy's creationTimestamp: where schedules start counting
    generation: int = 1
    revisions: Mapping[str, RevisionRun] = field(default_factory=dict)  # by FineTuneJob name
    evaluations: Mapping[str, EvaluationRun] = field(default_factory=dict)  # by Job name
    prometheus: Reading | None = None  # None: not queried this pass (no such trigger, or backing off)
    manual: str | None = None  # the manual trigger annotation's value
    problems: tuple[str, ...] = ()  # the spec's problems (InvalidSpec)
    refused: Mapping[str, str] = field(default_factory=dict)  # revision name -> why the API server refused to create it


@dataclass(frozen=True)
class NewRevision:
    number: int
    name: str


@dataclass(frozen=True)
class EvaluationRequest:
    """Score `models` (challenger first) on the same data in one trainer run."""

    name: str
    purpose: str  # gate | champion | data
    revision: str  # the revision whose output folder the run writes its results under
    models: tuple[str, ...] = ()
    since: str | None = None  # data: count objects newer than this watermark


@dataclass(frozen=True)
class Action:
    status: dict[str, Any]
    create: tuple[NewRevision, ...] = ()
    evaluate: tuple[EvaluationRequest, ...] = ()
    publish: str | None = None  # model URI to write to spec.promotion.target
    delete_revisions: tuple[str, ...] = ()
    delete_evaluations: tuple[str, ...] = ()
    events: tuple[tuple[str, str, str], ...] = ()
    retrained: str | None = None  # the trigger type of a retrain started now
    promoted: int = 0
    rejected: int = 0


# --- names -----------------------------------------------------------------------------------


def revision_name(policy: str, number: int) -> str:
    return f"{policy}-r{number}"


def gate_name(policy: str, revision: str, run: int = 1) -> str:
    """The gate evaluation's Job; a gate re-run against a new champion (run 2, 3...) gets its own."""
    return f"{policy}-{revision}-gate" + (f"{run}" if run > 1 else "")


def champion_evaluation_name(policy: str, slot: datetime) -> str:
    # Minutes since the epoch in hex: one name per schedule slot, short enough for a Job.
    return f"{policy}-e{int(slot.timestamp()) // 60:x}"


def data_check_name(policy: str, moment: datetime) -> str:
    return f"{policy}-d{int(moment.timestamp()):x}"


def revision_number(policy: str, job: str) -> int | None:
    match = re.fullmatch(re.escape(policy) + r"-r([0-9]+)", job)
    return int(match.group(1)) if match else None


def normalize_revision(value: str) -> str:
    return value if value.startswith("r") else f"r{value}"
