"""Every rule of a MaintenancePolicy in one pure function: `decide(spec, observations, state, now)`.

Read it like `status.py`'s `derive_status`: what the cluster and the outside world say
(`Observations`, gathered by the handlers) and what we remembered (`state`, the policy's own
`status`) go in with the clock; one `Action` comes out: the whole new status, and the few
effects the handlers carry out (create revision FineTuneJobs and evaluation Jobs, write the
champion's URI to the promotion target, delete what history no longer keeps, Events).

Everything that must survive an operator restart lives in status: the last revision number,
when the watched metric first crossed its threshold (so `for` is neither reset nor counted
twice), the last schedule slots handled, the manual annotation value already acted on. Child
names are deterministic (`<policy>-r<N>`, `<policy>-r<N>-gate[<run>]`, `<policy>-e<minutes>`), so a
pass repeated after a crash creates nothing twice, and a FineTuneJob created just before a
crash is adopted back into history rather than trained again.

Order of the rules, as a pass applies them:
  1. adopt a production model (spec.adoptModelURI) as champion r0; adopt unknown revisions
  2. pinnedRevision: that revision becomes champion (RolledBack), promotion held
  3. revisions move on: Training -> Evaluating (gate) -> Promoted | Rejected | Held; or Failed
  4. the scheduled champion evaluation (at most one missed run after downtime, as CronJob)
  5. the newData check (a short Job listing the prefix from the latest revision's watermark),
     then triggers (manual, metric with `for`, newData, schedule, the first revision) under the
     guards: suspend stops all; maxConcurrentJobs blocks all; cooldown blocks all but manual
  6. history capped at historyLimit (never the champion or an active revision)
  7. phase and conditions (Ready, Degraded, Retraining, Stalled)
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any, Mapping

from tuneloop.api.policy import MaintenancePolicySpec, MetricTrigger
from tuneloop.operator.policy.model import (  # noqa: F401  (re-exported: the handlers' and tests' vocabulary)
    CHAMPION, DATA, GATE, Action, EvaluationRequest, EvaluationRun, NewRevision, Observations, Reading, RevisionRun, Tuning,
    champion_evaluation_name, data_check_name, gate_name, normalize_revision, revision_name, revision_number,
)
from tuneloop.operator.policy.schedule import latest_due, next_after, seconds
from tuneloop.operator.status import parse_time, rfc3339

TRAINING, EVALUATING, PROMOTED, REJECTED, FAILED, HELD, ADOPTED = (
    "Training", "Evaluating", "Promoted", "Rejected", "Failed", "Held", "Adopted")
ACTIVE = frozenset({TRAINING, EVALUATING})
# Revisions whose model exists (pinnedRevision may name these).
TRAINED = frozenset({PROMOTED, REJECTED, HELD, ADOPTED})
CONDITION_TYPES = ("Ready", "Degraded", "Retraining", "Stalled")
# Trigger types in the order one is chosen when several fire in the same pass.
TRIGGER_ORDER = ("manual", "metric", "newData", "schedule", "initial")
DATA_KEYS = ("job", "since", "requestedAt", "checkedAt", "objects", "bytes", "newest", "error")
WATCH_KEYS = ("value", "observedAt", "breachedSince", "error", "failures", "unreachableSince", "retryAt")
COMPARE = {"<": float.__lt__, "<=": float.__le__, ">": float.__gt__, ">=": float.__ge__}


# --- small pure helpers --------------------------------------------------------------------------


def breaches(trigger: MetricTrigger, value: float) -> bool:
    return COMPARE[trigger.operator](float(value), float(trigger.threshold))


def score(report: Mapping[str, Any] | None, model: str, metric: str) -> float | None:
    for entry in (report or {}).get("models") or ():
        if entry.get("model") == model and isinstance((entry.get("metrics") or {}).get(metric), (int, float)):
            return float(entry["metrics"][metric])
    return None


def improvement(challenger: float, champion: float, direction: str) -> float:
    return round(challenger - champion if direction == "maximize" else champion - challenger, 9)


def backoff(failures: int, tuning: Tuning) -> float:
    return min(tuning.backoff_max, tuning.backoff_base * 2 ** max(failures - 1, 0))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def build_conditions(truth: Mapping[str, tuple[bool, str, str]], previous: Any, generation: int, now: datetime) -> list[dict]:
    """Kubernetes-style conditions; lastTransitionTime moves only when a status flips."""
    before = {c.get("type"): c for c in previous or ()}
    out = []
    for type_ in CONDITION_TYPES:
        value, reason, message = truth[type_]
        status = "True" if value else "False"
        old = before.get(type_) or {}
        since = old.get("lastTransitionTime") if old.get("status") == status else None
        out.append({"type": type_, "status": status, "reason": reason, "message": message,
                    "lastTransitionTime": since or rfc3339(now), "observedGeneration": generation})
    return out


# --- the decision ---------------------------------------------------------------------------------


class _Pass:
    """One pass of the rules; `decide` is its only caller. Holds what the pass accumulates."""

    def __init__(self, spec: MaintenancePolicySpec, obs: Observations, state: Mapping[str, Any], now: datetime,
                 tuning: Tuning):
        self.spec, self.obs, self.now, self.tuning = spec, obs, now, tuning
        self.s: dict[str, Any] = copy.deepcopy(dict(state or {}))
        self.history: list[dict[str, Any]] = list(self.s.get("history") or [])
        self.create: list[NewRevision] = []
        self.evaluate: list[EvaluationRequest] = []
        self.consumed: set[str] = set()
        self.events: list[tuple[str, str, str]] = []
        self.problems: list[str] = list(obs.problems)
        self.blocked: str | None = None
        self.retrained: str | None = None
        self.promoted = self.rejected = 0
        self.publish: str | None = None

    @property
    def champion(self) -> dict[str, Any] | None:
        return self.s.get("champion") or None

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    def entry(self, revision: str) -> dict[str, Any] | None:
        return next((h for h in self.history if h.get("revision") == revision), None)

    # 1. what we adopt ------------------------------------------------------------------------

    def adopt(self) -> None:
        uri = self.spec.adopt_model_uri
        if uri and not self.champion and not self.entry("r0"):
            at = rfc3339(self.now)
            self.s["champion"] = {"revision": "r0", "job": None, "modelURI": uri, "metric": None, "promotedAt": at}
            self.s["published"] = uri  # it is in production already
            self.history.append({"revision": "r0", "job": None, "modelURI": uri, "trigger": "adopted",
                                 "verdict": ADOPTED, "promotedAt": at, "message": "adopted from spec.adoptModelURI"})
        # A FineTuneJob created just before a crash, before its status was written.
        for job in sorted(self.obs.revisions, key=lambda j: revision_number(self.obs.name, j) or 0):
            number = revision_number(self.obs.name, job)
            if number is None or self.entry(f"r{number}"):
                continue
            self.history.append({"revision": f"r{number}", "job": job, "trigger": "unknown", "verdict": TRAINING,
                                 "startedAt": rfc3339(self.now), "message": "adopted after an operator restart"})
            self.s["latestRevision"] = max(int(self.s.get("latestRevision") or 0), number)

    # 2. pinnedRevision ----------------------------------------------------------------------------

    def pin(self) -> None:
        pinned = self.spec.pinned_revision
        if not pinned:
            return
        revision = normalize_revision(pinned)
        entry = self.entry(revision)
        if entry is None or entry.get("verdict") not in TRAINED or not entry.get("modelURI"):
            known = ", ".join(h["revision"] for h in self.history if h.get("verdict") in TRAINED) or "none yet"
            self.problems.append(f"spec.pinnedRevision: {pinned!r} has no trained model in status.history "
                                 f"(revisions with one: {known}); pin one of those or remove the field")
            return
        champion = self.champion or {}
        if champion.get("revision") != revision:
            self.s["champion"] = {"revision": revision, "job": entry.get("job"), "modelURI": entry["modelURI"],
                                  "metric": entry.get("metric"), "promotedAt": rfc3339(self.now)}
            self.event("Normal", "RolledBack", f"champion pinned to {revision} ({entry['modelURI']}) by spec.pinnedRevision, "
                                               f"was {champion.get('revision', 'none')}; promotion held until the pin is cleared")

    # 3. revisions move on --------------------------------------------------------------------------

    def progress(self) -> None:
        for entry in sorted(self.history, key=lambda h: int(h["revision"][1:])):
            if entry.get("verdict") == TRAINING:
                self._training(entry)
            if entry.get("verdict") == EVALUATING:
                self._gate(entry)

    def _training(self, entry: dict[str, Any]) -> None:
        run = self.obs.revisions.get(entry["job"])
        if run is None:
            refused = self.obs.refused.get(entry["job"])
            if refused:  # e.g. an admission webhook or quota: the same manifest would be refused again
                entry.update(verdict=FAILED, message=f"the API server refused to create {entry['job']}: {refused}")
                self.event("Warning", "RetrainFailed", f"{entry['revision']}: {entry['message']}")
                return
            self.create.append(NewRevision(int(entry["revision"][1:]), entry["job"]))  # idempotent: 409 is fine
            return
        if run.phase == "Succeeded":
            entry.update(verdict=EVALUATING, trainedAt=run.completed or rfc3339(self.now))
            if run.model_uri:
                entry["modelURI"] = run.model_uri
        elif run.phase == "Failed":
            entry.update(verdict=FAILED, message=run.message or "the FineTuneJob failed")
            self.event("Warning", "RetrainFailed", f"{entry['revision']} ({entry['job']}) failed: {entry['message']}")

    def _gate(self, entry: dict[str, Any]) -> None:
        promotion = self.spec.promotion
        run = int(entry.get("gateRuns") or 1)
        name = gate_name(self.obs.name, entry["revision"], run)
        result = self.obs.evaluations.get(name)
        champion = self.champion
        models = (entry["modelURI"],) + ((champion["modelURI"],) if champion else ())
        if result is None or not result.finished:
            self.evaluate.append(EvaluationRequest(name, GATE, entry["revision"], models))
            return
        self.consumed.add(name)
        rev = entry["revision"]
        if result.failed:
            entry.update(verdict=REJECTED, message=f"gate evaluation {name} failed: {result.message}")
            self.rejected += 1
            self.event("Warning", "ChallengerRejected", f"{rev}: {entry['message']}; the champion stays")
            return
        gated_against = (result.report or {}).get("models") or []
        champion_uri = gated_against[1]["model"] if len(gated_against) > 1 else None
        if champion_uri != (champion["modelURI"] if champion else None):
            # The champion changed while this gate ran (a concurrent revision was promoted, or a
            # pin): its numbers compare with a model no longer serving. Gate again, both in one run.
            entry["gateRuns"] = run + 1
            self.evaluate.append(EvaluationRequest(gate_name(self.obs.name, rev, run + 1), GATE, rev, models))
            self.event("Normal", "GateRerun", f"{rev}: gated against {champion_uri or 'no champion'}, but the champion is "
                                              f"now {champion['revision'] if champion else 'none'}; evaluating again")
            return
        metric = promotion.metric
        challenger_value = score(result.report, entry["modelURI"], metric)
        entry["metric"] = challenger_value
        entry["evaluationRows"] = (result.report or {}).get("rows")
        champion_value = score(result.report, champion_uri, metric) if champion_uri else None
        entry["championMetric"] = champion_value
        if challenger_value is None:
            entry.update(verdict=REJECTED, message=f"gate evaluation {name} reported no {metric}")
            self.rejected += 1
            self.event("Warning", "ChallengerRejected", f"{rev}: {entry['message']}; the champion stays")
            return
        numbers = f"{metric} {_fmt(challenger_value)} vs champion {_fmt(champion_value)} on {entry.get('evaluationRows')} rows"
        wins = champion_value is None or (
            (gain := improvement(challenger_value, champion_value, promotion.direction)) > 0
            and gain >= promotion.min_improvement)
        if not wins:
            entry.update(verdict=REJECTED, message=f"{numbers}: needs a {promotion.direction} improvement of at least "
                                                   f"{promotion.min_improvement} (spec.promotion.minImprovement)")
            self.rejected += 1
            self.event("Normal", "ChallengerRejected", f"{rev} rejected: {entry['message']}; the champion stays")
            return
        if self.spec.pinned_revision:
            entry.update(verdict=HELD, message=f"{numbers}: wins, but spec.pinnedRevision holds promotion")
            self.event("Normal", "PromotionHeld", f"{rev}: {entry['message']}")
            return
        at = rfc3339(self.now)
        entry.update(verdict=PROMOTED, promotedAt=at, message=numbers)
        self.s["champion"] = {"revision": rev, "job": entry["job"], "modelURI": entry["modelURI"],
                              "metric": challenger_value, "promotedAt": at}
        self.promoted += 1
        before = champion["revision"] if champion else "none"
        self.event("Normal", "ModelPromoted", f"{rev} promoted over {before}: {numbers}; model {entry['modelURI']}")

    # 4. the scheduled evaluation of the champion -------------------------------------------------------

    def scheduled_evaluation(self) -> None:
        ev = self.spec.evaluation
        if ev is None or not ev.schedule:
            self.s["nextEvaluation"] = None
            return
        pending = self.s.get("pendingEvaluation")
        if pending:
            result = self.obs.evaluations.get(pending["job"])
            if result is None or not result.finished:
                self.evaluate.append(EvaluationRequest(pending["job"], CHAMPION, pending["revision"], (pending["modelURI"],)))
            else:
                self.consumed.add(pending["job"])
                value = score(result.report, pending["modelURI"], ev.metric) if result.succeeded else None
                self.s["lastEvaluation"] = {
                    "time": rfc3339(self.now), "revision": pending["revision"], "job": pending["job"],
                    "metric": ev.metric, "value": value, "rows": (result.report or {}).get("rows"),
                    "message": result.message if result.failed else None}
                if result.failed or value is None:
                    self.event("Warning", "EvaluationFailed", f"{pending['job']}: {result.message or 'no ' + ev.metric}")
                self.s["pendingEvaluation"] = None
        anchor = parse_time(self.s.get("lastScheduledEvaluation")) or self.obs.created
        due = latest_due(ev.schedule, ev.time_zone, anchor, self.now)
        if due is not None and not self.s.get("pendingEvaluation"):
            self.s["lastScheduledEvaluation"] = rfc3339(due)
            champion = self.champion
            if champion:
                job = champion_evaluation_name(self.obs.name, due)
                self.s["pendingEvaluation"] = {"job": job, "revision": champion["revision"],
                                               "modelURI": champion["modelURI"], "scheduledAt": rfc3339(due)}
                self.evaluate.append(EvaluationRequest(job, CHAMPION, champion["revision"], (champion["modelURI"],)))
        self.s["nextEvaluation"] = rfc3339(next_after(ev.schedule, ev.time_zone, self.now))

    # 5. triggers under guards: the newData check, then every trigger ------------------------------

    def watermark(self) -> str:
        """What the latest revision's data reached (newest object seen when it started)."""
        for entry in reversed(self.history):
            if entry.get("dataWatermark"):
                return entry["dataWatermark"]
        return rfc3339(self.obs.created)

    def check_new_data(self) -> None:
        trigger = self.spec.triggers.new_data
        if trigger is None:
            self.s["newData"] = None
            return
        nd = {k: (self.s.get("newData") or {}).get(k) for k in DATA_KEYS}
        if nd["job"]:
            result = self.obs.evaluations.get(nd["job"])
            if result is None or not result.finished:
                self.evaluate.append(EvaluationRequest(nd["job"], DATA, "data", since=nd["since"]))
            else:
                self.consumed.add(nd["job"])
                report = result.report or {}
                if result.succeeded and isinstance(report.get("objects"), int):
                    nd.update(objects=report["objects"], bytes=report.get("bytes"), newest=report.get("newest") or nd["newest"],
                              error=None)
                else:
                    nd["error"] = f"new-data check {nd['job']} failed: {result.message or 'no report'}"
                nd.update(job=None, checkedAt=rfc3339(self.now))
        else:
            checked = parse_time(nd["checkedAt"])
            if checked is None or (self.now - checked).total_seconds() >= self.tuning.data_interval:
                job = data_check_name(self.obs.name, self.now)
                nd.update(job=job, since=self.watermark(), requestedAt=rfc3339(self.now))
                self.evaluate.append(EvaluationRequest(job, DATA, "data", since=nd["since"]))
        self.s["newData"] = nd

    # triggers ----------------------------------------------------------------------

    def watched(self) -> tuple[float | None, str | None]:
        """(value, where from) of the metric trigger's watched value."""
        trigger = self.spec.triggers.metric
        if trigger is None:
            return None, None
        if trigger.source == "prometheus":
            return (self.s.get("metricWatch") or {}).get("value"), "prometheus"
        last = self.s.get("lastEvaluation") or {}
        champion = self.champion or {}
        if last.get("value") is not None and last.get("revision") == champion.get("revision"):
            return float(last["value"]), "evaluation"
        return None, "evaluation"

    def observe_metric(self) -> None:
        trigger = self.spec.triggers.metric
        if trigger is None:
            self.s["metricWatch"] = None
            return
        watch = dict(self.s.get("metricWatch") or {})
        reading = self.obs.prometheus
        if trigger.source == "prometheus" and reading is not None:
            if reading.error is not None:
                failures = int(watch.get("failures") or 0) + 1
                watch.update(error=reading.error, failures=failures,
                             unreachableSince=watch.get("unreachableSince") or rfc3339(self.now),
                             retryAt=rfc3339(self.now + timedelta(seconds=backoff(failures, self.tuning))))
            else:
                watch.update(value=reading.value, observedAt=rfc3339(self.now), error=None, failures=None,
                             unreachableSince=None, retryAt=None)
        self.s["metricWatch"] = watch
        value, _ = self.watched()
        fresh = trigger.source == "evaluation" or (reading is not None and reading.error is None)
        if value is not None and fresh:
            if breaches(trigger, value):
                if not watch.get("breachedSince"):
                    watch["breachedSince"] = rfc3339(self.now)
                    self.event("Warning", "DegradationDetected",
                               f"{self._what()} = {value:g} {trigger.operator} {trigger.threshold:g}; "
                               f"retraining if it holds for {trigger.for_}")
            else:
                watch["breachedSince"] = None
        elif trigger.source == "evaluation":
            watch["breachedSince"] = None  # the champion has not been scored yet: nothing holds
        # Every key, None included: the status is written as a merge patch, where null removes.
        self.s["metricWatch"] = {k: watch.get(k) for k in WATCH_KEYS}

    def _what(self) -> str:
        trigger = self.spec.triggers.metric
        return trigger.query if trigger and trigger.source == "prometheus" else f"evaluation {self.spec.evaluation.metric}"  # type: ignore[union-attr]

    def unreachable(self) -> str | None:
        watch = self.s.get("metricWatch") or {}
        since = parse_time(watch.get("unreachableSince"))
        if since is None or (self.now - since).total_seconds() < self.tuning.stalled_after:
            return None
        return (f"Prometheus unreachable since {watch['unreachableSince']} ({watch.get('failures')} failures): "
                f"{watch.get('error')}; retrying at {watch.get('retryAt')}")

    def candidates(self) -> list[tuple[str, str, str]]:
        """(type, reason, message) of every trigger that fires now."""
        trig, found = self.spec.triggers, []
        if trig.manual is not None and self.obs.manual and self.obs.manual != self.s.get("manualSeen"):
            found.append(("manual", "ManualRequest", f"annotation {trig.manual.annotation}={self.obs.manual}"))
        metric = trig.metric
        watch = self.s.get("metricWatch") or {}
        since = parse_time(watch.get("breachedSince"))
        fresh = metric is not None and (metric.source == "evaluation" or watch.get("observedAt") == rfc3339(self.now))
        value, _ = self.watched()
        if metric is not None and since is not None and fresh and value is not None and (self.now - since).total_seconds() >= seconds(metric.for_):
            found.append(("metric", "Degraded", f"{self._what()} = {value:g} {metric.operator} {metric.threshold:g} "
                                                f"since {watch['breachedSince']} (for {metric.for_})"))
        nd = self.s.get("newData") or {}
        if trig.new_data is not None and not nd.get("error") and nd.get("since") == self.watermark() and \
                nd.get("objects") is not None and not nd.get("job"):
            objects, size = int(nd["objects"]), int(nd.get("bytes") or 0)
            if (trig.new_data.min_objects is not None and objects >= trig.new_data.min_objects) or \
                    (trig.new_data.min_bytes is not None and size >= trig.new_data.min_bytes):
                found.append(("newData", "NewData", f"{objects} new objects ({size} bytes) under {trig.new_data.uri} "
                                                    f"since {nd['since']}"))
        if trig.schedule is not None:
            anchor = parse_time(self.s.get("lastScheduledRetrain")) or self.obs.created
            due = latest_due(trig.schedule.cron, trig.schedule.time_zone, anchor, self.now)
            if due is not None:
                # The slot is used up whether or not a guard lets it run (CronJob's Forbid).
                self.s["lastScheduledRetrain"] = rfc3339(due)
                found.append(("schedule", "Schedule", f"schedule {trig.schedule.cron!r} at {rfc3339(due)}"))
        if not self.champion and not self.history and not self.spec.adopt_model_uri:
            found.append(("initial", "NoChampion", "no champion yet: training the first revision"))
        return sorted(found, key=lambda t: TRIGGER_ORDER.index(t[0]))

    def triggers(self) -> None:
        found = self.candidates()
        if self.spec.guards.suspend or not found or self.problems:
            if found and self.spec.guards.suspend:
                self.blocked = f"suspended (spec.guards.suspend): not acting on {found[0][0]}"
            return
        guards = self.spec.guards
        active = [h for h in self.history if h.get("verdict") in ACTIVE]
        if len(active) >= guards.max_concurrent_jobs:
            self.blocked = (f"{found[0][0]} trigger waits: {len(active)} retraining run(s) active "
                            f"(spec.guards.maxConcurrentJobs {guards.max_concurrent_jobs})")
            return
        last = parse_time(self.s.get("lastRetrainTime"))
        cooling = last is not None and (self.now - last).total_seconds() < seconds(guards.cooldown)
        allowed = [t for t in found if t[0] in ("manual", "initial") or not cooling]
        if not allowed:
            ready = rfc3339(last + timedelta(seconds=seconds(guards.cooldown)))  # type: ignore[operator]
            self.blocked = f"{found[0][0]} trigger held by spec.guards.cooldown {guards.cooldown} until {ready}"
            return
        type_, reason, message = allowed[0]
        number = int(self.s.get("latestRevision") or 0) + 1
        name = revision_name(self.obs.name, number)
        at = rfc3339(self.now)
        seen = (self.s.get("newData") or {}).get("newest")
        self.history.append({"revision": f"r{number}", "job": name, "trigger": type_, "verdict": TRAINING,
                             "startedAt": at, "message": message, "dataWatermark": seen or self.watermark()})
        self.create.append(NewRevision(number, name))
        self.s.update(latestRevision=number, lastRetrainTime=at,
                      lastTrigger={"type": type_, "reason": reason, "time": at, "message": message})
        if self.obs.manual:
            self.s["manualSeen"] = self.obs.manual  # any retrain answers a pending manual request
        self.retrained = type_
        self.event("Normal", "RetrainTriggered", f"{name} ({type_}): {message}")

    # 6. history ------------------------------------------------------------------------------------

    def cap_history(self) -> list[str]:
        champion = (self.champion or {}).get("revision")
        keep_always = [h for h in self.history if h.get("verdict") in ACTIVE or h.get("revision") == champion]
        others = [h for h in self.history if h not in keep_always]
        room = max(self.spec.history_limit - len(keep_always), 0)
        dropped = others[:len(others) - room] if len(others) > room else []
        self.history = [h for h in self.history if h not in dropped]
        return [h["job"] for h in dropped if h.get("job")]

    # 7. phase and conditions -------------------------------------------------------------------------

    def summarize(self) -> None:
        spec, s = self.spec, self.s
        active = [h for h in self.history if h.get("verdict") in ACTIVE]
        s["activeJob"] = active[-1]["job"] if active else None
        trigger = spec.triggers.metric
        value, _ = self.watched()
        degraded = trigger is not None and value is not None and breaches(trigger, value)
        stalled = "; ".join(self.problems) or self.unreachable() or (self.s.get("newData") or {}).get("error")
        champion = self.champion
        if stalled:
            phase, reason = "Stalled", "InvalidSpec" if self.obs.problems else "Stalled"
        elif spec.guards.suspend:
            phase, reason = "Suspended", "Suspended"
        elif any(h["verdict"] == TRAINING for h in active):
            phase, reason = "Retraining", "Retraining"
        elif active:
            phase, reason = "Evaluating", "Evaluating"
        elif champion is None:
            phase, reason = "Pending", "NoChampion"
        elif degraded:
            phase, reason = "Degraded", "Degraded"
        else:
            phase, reason = "Ready", "Ready"
        if champion:
            ready_msg = f"champion {champion['revision']} serves {champion['modelURI']}"
            if spec.pinned_revision:
                ready_msg += " (pinned by spec.pinnedRevision; promotion held until cleared)"
        else:
            ready_msg = "no champion yet"
        if self.blocked:
            ready_msg += f"; {self.blocked}"
        watched = f"{self._what()} = {value:g} {trigger.operator} {trigger.threshold:g}" if degraded else "within threshold"  # type: ignore[union-attr]
        truth = {
            "Ready": (bool(champion) and not stalled, "Pinned" if spec.pinned_revision and champion else reason, ready_msg),
            "Degraded": (degraded, "ThresholdCrossed" if degraded else "WithinThreshold", watched),
            "Retraining": (bool(active), "RevisionActive" if active else "Idle",
                           ", ".join(f"{h['job']} {h['verdict'].lower()}" for h in active) or "no retraining run active"),
            "Stalled": (bool(stalled), reason if stalled else "Progressing", stalled or ""),
        }
        # No nulls inside the list: a merge patch replaces lists whole, and null is no number.
        history = [{k: v for k, v in h.items() if v is not None} for h in self.history]
        s.update(phase=phase, observedGeneration=self.obs.generation, history=history,
                 conditions=build_conditions(truth, s.get("conditions"), self.obs.generation, self.now))
        # Level-based: whatever the champion is (promoted, pinned) goes to the target until it is there.
        self.publish = champion["modelURI"] if champion and champion.get("modelURI") != s.get("published") else None


def decide(spec: MaintenancePolicySpec | None, obs: Observations, state: Mapping[str, Any], now: datetime,
           tuning: Tuning = Tuning()) -> Action:
    """The whole new status and the effects to carry out; see the module docstring for the order."""
    if spec is None:  # does not even parse: say so, touch nothing else
        s = dict(state or {})
        message = "; ".join(obs.problems) or "the spec does not parse"
        truth = {"Ready": (False, "InvalidSpec", message), "Degraded": (False, "InvalidSpec", ""),
                 "Retraining": (False, "InvalidSpec", ""), "Stalled": (True, "InvalidSpec", message)}
        s.update(phase="Stalled", observedGeneration=obs.generation,
                 conditions=build_conditions(truth, s.get("conditions"), obs.generation, now))
        return Action(status=s)
    p = _Pass(spec, obs, state, now, tuning)
    p.adopt()
    p.pin()
    p.progress()
    p.scheduled_evaluation()
    p.observe_metric()
    p.check_new_data()
    p.triggers()
    deleted = p.cap_history()
    p.summarize()
    requested = {e.name for e in p.evaluate}
    finished = tuple(sorted(n for n, r in obs.evaluations.items()
                            if r.finished and n not in requested and n not in p.consumed))
    if p.publish:
        p.s["published"] = p.publish
    return Action(status=p.s, create=tuple(p.create), evaluate=tuple(p.evaluate), publish=p.publish,
                  delete_revisions=tuple(deleted), delete_evaluations=finished, events=tuple(p.events),
                  retrained=p.retrained, promoted=p.promoted, rejected=p.rejected)
