"""One step of a search, decided purely: records and trial observations in, what to do out.

`advance` rebuilds the study from its records, tells it what the trials' Jobs say (finished,
failed, an intermediate value that the pruner may answer with "stop"), asks for new trials
while fewer than `parallelism` run, and returns the new records with the Jobs to create and
to stop. The handler persists the records *before* it creates or deletes anything
(write-ahead), so every effect can be redone from the records after a crash: a Running trial
without a Job gets its Job (by its deterministic name), a Pruned trial whose Job still runs
gets it deleted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from tuneloop.api.tuning import TuningSpec
from tuneloop.operator.tuning.observe import TrialObservation
from tuneloop.tuning.study import Study, TrialRecord

# A search whose first trials all fail is failing for a reason no trial will fix (a bad image,
# a dataset that does not parse): stop asking after this many, with none succeeding.
FAIL_FAST_TRIALS = 3


@dataclass(frozen=True)
class SearchStep:
    records: list[TrialRecord]
    start: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # trials whose children must exist
    stop: list[int] = field(default_factory=list)                           # trials whose Job must go
    events: list[tuple[str, str, str]] = field(default_factory=list)        # (type, reason, message)


def failing_fast(records: list[TrialRecord], trials: int) -> bool:
    finished = [r for r in records if r.finished]
    return (len(finished) >= min(FAIL_FAST_TRIALS, trials) and all(r.state == "Failed" for r in finished))


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.6g}"


def advance(tuning: TuningSpec, records: list[TrialRecord], observations: Mapping[int, TrialObservation],
            enqueue: Mapping[str, Any] | None = None, suspended: bool = False) -> SearchStep:
    """The next step of the search (see the module docstring). `enqueue`: params the first
    trial should try (a MaintenancePolicy's champion), used only when nothing was asked yet.
    `suspended` (spec.runPolicy.suspend): running trials are kept (their Jobs are suspended by
    the caller), no new trial starts."""
    study = Study(tuning, records)
    metric = tuning.objective.metric
    start: list[tuple[int, dict[str, Any]]] = []
    stop: list[int] = []
    events: list[tuple[str, str, str]] = []
    for record in study.records():
        obs = observations.get(record.number)
        if record.state == "Pruned" and obs is not None and obs.state == "Active":
            stop.append(record.number)  # recorded as pruned; its Job was not deleted yet
        if record.state != "Running":
            continue
        if obs is None or obs.state == "Missing":
            start.append((record.number, dict(record.params)))
        elif obs.state == "Succeeded":
            if obs.final_step is not None and obs.value is not None:
                # The final value as the last intermediate one too: the pruner (and Hyperband's
                # max_resource "auto") then know how far a finished trial went.
                study.report(record.number, obs.final_step, obs.value)
            done = study.tell(record.number, obs.value, attrs={"final": obs.final_uri, "metrics": obs.metrics})
            events.append(("Normal", "TrialSucceeded", f"trial {record.number}: {metric}={_fmt(done.value)}"))
        elif obs.state == "Failed":
            study.tell(record.number, state="Failed")
            events.append(("Warning", "TrialFailed", f"trial {record.number}: {obs.reason}: {obs.message}"))
        elif obs.intermediate is not None and study.report(record.number, *obs.intermediate):
            pruned = study.tell(record.number, state="Pruned")
            stop.append(record.number)
            step, value = obs.intermediate
            events.append(("Normal", "TrialPruned", f"trial {record.number} pruned at step {step}: "
                                                    f"{metric}={_fmt(value)} (last value {_fmt(pruned.value)})"))
    if not study.records() and enqueue:
        study.enqueue(dict(enqueue))
    while (not suspended and study.can_ask() and len(study.running()) < tuning.parallelism
           and not failing_fast(study.records(), tuning.trials)):
        number, params = study.ask()
        start.append((number, params))
        events.append(("Normal", "TrialStarted", f"trial {number}: " + ", ".join(f"{k}={v}" for k, v in params.items())))
    return SearchStep(study.records(), start, stop, events)
