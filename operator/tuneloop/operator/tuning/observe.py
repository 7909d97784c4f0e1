"""What a search trial's Job, pods and metrics say, as one `TrialObservation` (pure).

A trial's Job is judged by the plain FineTuneJob's own `derive_status`, so a trial fails,
stalls (an image that does not pull, a pod that cannot be scheduled) or succeeds for exactly
the reasons a FineTuneJob does. Its objective comes from the trainer's final report
(`validation`, the exported model's validation metrics: the termination message of rank 0),
its intermediate values from the metrics endpoint while it trains
(`tuneloop_trainer_eval_metric{metric}` at `tuneloop_trainer_eval_step`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Mapping, Sequence

from prometheus_client.parser import text_string_to_metric_families

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.operator.scrape import PREFIX, final_report_pending, parse_final_report
from tuneloop.operator.status import FAILED, SUCCEEDED, derive_status, pod_rank, trainer_terminated

TrialState = Literal["Missing", "Active", "Succeeded", "Failed"]


@dataclass(frozen=True)
class TrialObservation:
    number: int
    state: TrialState
    reason: str = ""
    message: str = ""
    stalled: bool = False
    value: float | None = None            # the objective, from the final report (Succeeded)
    final_uri: str | None = None          # where the trial's model is (Succeeded)
    metrics: dict[str, float] = field(default_factory=dict)  # the final report's metrics (Succeeded)
    intermediate: tuple[int, float] | None = None           # (eval step, objective) while Active
    final_step: int | None = None                           # the step training ended at (Succeeded)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_intermediate(text: str, metric: str, *, job: str, namespace: str) -> tuple[int, float] | None:
    """(step, value) of the trainer's last evaluation of `metric`, or None before the first one.

    The step is `eval_step` (the step of that evaluation); a trainer without it is read at its
    current `step`, a little late but never early.
    """
    value = step = current = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("job", job) != job or labels.get("namespace", namespace) != namespace:
                continue
            if sample.name == PREFIX + "eval_metric" and labels.get("metric") == metric and _finite(sample.value):
                value = sample.value
            elif sample.name == PREFIX + "eval_step" and _finite(sample.value):
                step = int(sample.value)
            elif sample.name == PREFIX + "step" and _finite(sample.value):
                current = int(sample.value)
    step = step if step is not None else current
    if value is None or step is None:
        return None
    return step, float(value)


def final_objective(message: str | None, metric: str) -> float | None:
    """The objective from a final report: its `validation` section (issue 14), never `metrics`,
    where the test split's accuracy would win over the validation one."""
    try:
        report = json.loads(message or "")
    except ValueError:
        return None
    value = ((report if isinstance(report, dict) else {}).get("validation") or {}).get(metric)
    return float(value) if _finite(value) else None


def _succeeded_rank0(pods: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    done = [p for p in pods if (p.get("status") or {}).get("phase") == "Succeeded" and pod_rank(p) == 0]
    return max(done, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "", default=None)


def observe_trial(number: int, job: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]], spec: FineTuneJobSpec,
                  metric: str, now: datetime, scraped: str | None = None, *, job_label: str = "",
                  namespace: str = "") -> TrialObservation:
    """Where trial `number` stands. `spec` is the trial's own spec; `scraped` its metrics text."""
    if job is None:
        return TrialObservation(number, "Missing", "CreatingJob", "creating the trial's Job")
    if (job.get("metadata") or {}).get("deletionTimestamp"):
        # Deleted behind our back (or pruned a moment ago): like a plain job's, a Running trial's
        # Job is created again once it is gone, and resumes from its checkpoint.
        return TrialObservation(number, "Missing", "WaitingForOldJob", "the trial's Job is being deleted")
    verdict = derive_status(job, pods, spec=spec, generation=1, previous={}, now=now)
    phase, reason, message = verdict.get("phase"), verdict.get("reason", ""), verdict.get("message", "")
    stalled = any(c.get("type") == "Stalled" and c.get("status") == "True" for c in verdict.get("conditions") or ())
    if phase == SUCCEEDED:
        if final_report_pending(job, pods, now):
            return TrialObservation(number, "Active", "Completing", "waiting for the trial's final report")
        pod = _succeeded_rank0(pods)
        text = trainer_terminated(pod).get("message") if pod is not None else None
        report = parse_final_report(text)
        final = (report.get("checkpoints") or {}).get("final") or spec.output.uri.rstrip("/") + "/final/"
        value = final_objective(text, metric)
        if value is None:
            return TrialObservation(number, "Failed", "NoObjective",
                                    f"the trial finished without reporting {metric} on validation "
                                    "(is there a validation split? an older trainer image?)")
        return TrialObservation(number, "Succeeded", "Succeeded", message, value=value, final_uri=final,
                                metrics=dict(report.get("metrics") or {}),
                                final_step=(report.get("progress") or {}).get("step"))
    if phase == FAILED:
        return TrialObservation(number, "Failed", reason, message)
    if reason == "Restarting":
        # A multi-node trial whose rank failed: the FineTuneJob controller restarts such a job
        # as a group; a search counts the trial as failed and moves on.
        return TrialObservation(number, "Failed", "RankFailed", message)
    intermediate = parse_intermediate(scraped, metric, job=job_label, namespace=namespace) if scraped else None
    return TrialObservation(number, "Active", reason, message, stalled=stalled, intermediate=intermediate)
