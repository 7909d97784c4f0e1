"""The status of a FineTuneJob that searches: a pure function of its records and trials.

The same phases and conditions as a plain FineTuneJob (`tuneloop.operator.status`), so
kubectl, kstatus and the Argo CD health script read a search like any job; plus
`status.tuning` (progress "done/total", the best trial and a compact table of trials) and,
once done, the best trial's model as `status.checkpoints.final` and its metrics as
`status.metrics`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping

from tuneloop.api.tuning import TuningSpec
from tuneloop.operator.status import (
    FAILED, PENDING, RUNNING, SUCCEEDED, SUSPENDED, TERMINAL, Verdict, rfc3339, verdict_fields,
)
from tuneloop.operator.tuning.decide import failing_fast
from tuneloop.operator.tuning.observe import TrialObservation
from tuneloop.tuning.study import TrialRecord, best_record

# Fields this function owns (with status.OWNED's phase/conditions): the rest is left alone.
OWNED = ("phase", "reason", "message", "observedGeneration", "conditions", "startTime", "completionTime",
         "tuning", "progress", "checkpoints", "metrics")


def _row(record: TrialRecord) -> dict[str, Any]:
    row: dict[str, Any] = {"number": record.number, "state": record.state, "params": dict(record.params)}
    value = record.value if record.value is not None else (record.intermediate[record.last_step]
                                                          if record.last_step is not None else None)
    if value is not None:
        row["value"] = round(float(value), 6)
    if record.last_step is not None:
        row["step"] = record.last_step
    return row


def tuning_section(tuning: TuningSpec, records: list[TrialRecord]) -> dict[str, Any]:
    done = sum(1 for r in records if r.finished)
    section: dict[str, Any] = {
        "progress": f"{done}/{tuning.trials}",
        "trialsDone": done,
        "trialsTotal": tuning.trials,
        "metric": tuning.objective.metric,
        "direction": tuning.objective.resolved_direction,
        "trials": [_row(r) for r in sorted(records, key=lambda r: r.number)],
    }
    best = best_record(records, tuning.objective.resolved_direction)
    if best is not None:
        section.update(bestTrial=best.number, bestValue=round(float(best.value), 6), bestParams=dict(best.params))
    return section


def _verdict(tuning: TuningSpec, records: list[TrialRecord], observations: Mapping[int, TrialObservation],
             suspended: bool) -> Verdict:
    metric = tuning.objective.metric
    running = [r for r in records if r.state == "Running"]
    best = best_record(records, tuning.objective.resolved_direction)
    best_note = f"; best so far trial {best.number}: {metric}={best.value:.6g}" if best else ""
    asked_all = len(records) >= tuning.trials or failing_fast(records, tuning.trials)
    if asked_all and not running:
        if best is not None:
            return Verdict(SUCCEEDED, "Succeeded", f"search finished: best trial {best.number} ({metric}={best.value:.6g}); "
                                                   f"its model is the result", ready=True)
        failed = [observations.get(r.number) for r in records if r.state == "Failed"]
        why = next((f"{o.reason}: {o.message}" for o in reversed(failed) if o is not None and o.reason), "")
        return Verdict(FAILED, "NoTrialSucceeded", f"no trial of the search completed ({len(records)} asked, "
                                                   f"{sum(r.state == 'Failed' for r in records)} failed)"
                                                   + (f"; last failure: {why}" if why else ""), stalled=True)
    if suspended:
        active = [r.number for r in running if (o := observations.get(r.number)) is None or o.reason not in ("Suspended", "Missing")]
        if active:
            return Verdict(SUSPENDED, "Suspending", f"suspending trial(s) {', '.join(map(str, active))}", reconciling=True)
        return Verdict(SUSPENDED, "Suspended", "suspended by spec.runPolicy.suspend: no trial trains and none starts; "
                                               "set it to false to resume the search (trials resume from their checkpoints)")
    stuck = [o for r in running if (o := observations.get(r.number)) is not None and o.stalled]
    if stuck:
        o = stuck[0]
        return Verdict(RUNNING if any(x.reason == "Training" for x in observations.values()) else PENDING,
                       o.reason, f"trial {o.number}: {o.message}", reconciling=True, stalled=True)
    training = [r.number for r in running if (o := observations.get(r.number)) is not None and o.reason == "Training"]
    done = sum(1 for r in records if r.finished)
    if training:
        which = ", ".join(str(n) for n in training)
        return Verdict(RUNNING, "Searching", f"{done}/{tuning.trials} trials done; training trial(s) {which}{best_note}",
                       ready=True, reconciling=True)
    return Verdict(PENDING, "StartingTrials", f"{done}/{tuning.trials} trials done; starting trial(s) "
                                              f"{', '.join(str(r.number) for r in running) or '-'}{best_note}", reconciling=True)


def derive_search_status(tuning: TuningSpec, records: list[TrialRecord], observations: Mapping[int, TrialObservation], *,
                         previous: Mapping[str, Any] | None, generation: int, now: datetime,
                         suspended: bool = False) -> dict[str, Any]:
    """The search's status fields; once done, the best trial's model and metrics (kept with its
    record when it was told) become the job's `checkpoints.final` and `metrics`."""
    previous = dict(previous or {})
    verdict = _verdict(tuning, records, observations, suspended)
    section = tuning_section(tuning, records)
    status: dict[str, Any] = {
        **verdict_fields(verdict, previous, generation, now),
        "tuning": section,
        "progress": {"percent": round(100.0 * section["trialsDone"] / tuning.trials, 1)},
    }
    status["startTime"] = previous.get("startTime") or rfc3339(now)
    if verdict.phase in TERMINAL:
        status["completionTime"] = previous.get("completionTime") or rfc3339(now)
    best = best_record(records, tuning.objective.resolved_direction)
    if verdict.phase == SUCCEEDED and best is not None:
        if best.user_attrs.get("final"):
            status["checkpoints"] = {"final": best.user_attrs["final"]}
        if best.user_attrs.get("metrics"):
            status["metrics"] = dict(best.user_attrs["metrics"])
    return status
