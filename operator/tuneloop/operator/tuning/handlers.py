"""kopf handlers of a FineTuneJob with `spec.tuning`: thin. The plain FineTuneJob handlers
(`tuneloop.operator.handlers`) leave such a job alone; these run its search.

- `start_search` (create / resume / spec update): validate (an invalid spec fails into status,
  exactly as a plain job's), create the study ConfigMap `<name>-study` if absent, first status.
- `run_search` (timer, until finished): the only writer of the study. Each pass reads the
  records, observes the running trials (Jobs and pods from the shared indexes, their metrics
  endpoint at most every scrape interval), decides (`decide.advance`), persists the records
  *first*, then deletes pruned trials' Jobs and creates new trials' children, then writes status.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from typing import Any, Mapping

import kopf

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.api.typed import Problem
from tuneloop.operator import metrics
from tuneloop.operator.builders import KIND, Blocked, Owner, TrainerDefaults, check_existing_child
from tuneloop.operator.handlers import (
    FTJ, INTERVALS, _awaits_ttl, is_finished, last_status, now, owned_job, owned_pods, parse, parse_cached, reject,
    status_sender, suspend_out_of_sync, sync_suspend, write_status,
)
from tuneloop.operator.kube import Forbidden, Kube
from tuneloop.operator.scrape import fetch_trainer_metrics, metrics_url
from tuneloop.operator.status import RECOVERABLE, TERMINAL, parse_time
from tuneloop.operator.tuning.builders import (
    ANNOTATION_ENQUEUE, build_study_config_map, build_trial_children, build_trial_spec, check_trial_names, records_of, study_config_map_name,
    study_data, trial_name,
)
from tuneloop.operator.tuning.decide import advance
from tuneloop.operator.tuning.observe import TrialObservation, observe_trial
from tuneloop.operator.tuning.status import derive_search_status



def searches(spec: Mapping[str, Any], **_: Any) -> bool:
    return bool((spec or {}).get("tuning"))


def _searching(spec: Mapping[str, Any], status: Mapping[str, Any], **_: Any) -> bool:
    return searches(spec) and bool((status or {}).get("phase")) and (status or {}).get("phase") not in TERMINAL


def parse_search(spec: Mapping[str, Any], name: str, namespace: str, allowed: Any) -> tuple[FineTuneJobSpec | None, list[Problem]]:
    parsed, problems = parse(spec, name, namespace, allowed)
    if parsed is not None and parsed.tuning is not None and not problems:
        problems = check_trial_names(name, parsed)
    return parsed, problems


@kopf.on.resume(*FTJ, id="search-resume", when=searches)
@kopf.on.create(*FTJ, id="search-create", when=searches)
@kopf.on.update(*FTJ, field="spec", id="search-update", when=searches)
@metrics.instrumented(KIND, "search")
def start_search(body: kopf.Body, spec: kopf.Spec, status: kopf.Status, name: str, namespace: str, uid: str,
                 patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    parsed, problems = parse_search(spec, name, namespace, memo.config.allowed)
    if problems:
        reject(body, memo, status, problems, patch)
    assert parsed is not None and parsed.tuning is not None
    current = last_status(body, memo, status)
    if current.get("phase") and current.get("reason") not in RECOVERABLE:
        return  # the timer has it (or it is done: a finished search never starts again)
    owner = Owner(name, namespace, uid)
    memo.kube.create_or_read(build_study_config_map(owner, []))
    new = derive_search_status(parsed.tuning, [], {}, previous=current, generation=body.metadata.get("generation", 1), now=now())
    write_status(body, memo, current, new, patch.status.update)


async def _scrape(memo: kopf.Memo, uid: str, number: int, pods: list[dict]) -> str | None:
    """The trial's metrics text, at most once per scrape interval; None when not due or unreachable."""
    due = getattr(memo, "search_scraped", None)
    if due is None:
        due = memo.search_scraped = {}
    key = (uid, number)
    if time.monotonic() - due.get(key, 0.0) < memo.config.scrape_interval:
        return None
    url = metrics_url(pods)
    if url is None:
        return None
    due[key] = time.monotonic()
    try:
        return await fetch_trainer_metrics(url, timeout=memo.config.scrape_timeout)
    except Exception:  # noqa: BLE001 - unreachable or mid-restart: the trial is unaffected
        return None


def ensure_trial(kube: Kube, owner: Owner, spec: FineTuneJobSpec, number: int, params: Mapping[str, Any],
                 defaults: TrainerDefaults) -> Blocked | None:
    """Create trial `number`'s children if absent (the Job last); why not, when a name is taken
    (an old Job still being deleted: wait; someone else's object: a person must act)."""
    for manifest in build_trial_children(owner, spec, number, params, defaults):
        try:
            existing = kube.create_or_read(manifest)
        except Forbidden as exc:
            return Blocked("Forbidden", f"{exc}; grant the operator's ServiceAccount this (see the chart's RBAC)", stalled=True)
        if existing is None:
            continue
        blocked, update = check_existing_child(existing, manifest, owner)
        if blocked is not None:
            return blocked
        if update is not None:
            kube.patch(manifest["kind"], manifest["metadata"]["namespace"], manifest["metadata"]["name"], update)
    return None


@kopf.timer(*FTJ, id="search", interval=INTERVALS.status_interval, when=_searching)
@metrics.instrumented(KIND, "search")
async def run_search(body: kopf.Body, spec: kopf.Spec, status: kopf.Status, name: str, namespace: str, uid: str,
                     memo: kopf.Memo, trainer_jobs: kopf.Index, trainer_pods: kopf.Index,
                     logger: Any, **_: Any) -> None:
    current = last_status(body, memo, status)
    if is_finished(current) or body.metadata.get("deletionTimestamp"):
        return
    parsed, problems = parse_cached(memo, body, spec)
    if parsed is None or problems or parsed.tuning is None:
        return  # start_search wrote why
    tuning, kube, owner = parsed.tuning, memo.kube, Owner(name, namespace, uid)
    config_map = await asyncio.to_thread(kube.read, "ConfigMap", namespace, study_config_map_name(name))
    try:
        records = records_of(config_map)
    except (ValueError, KeyError, TypeError) as exc:
        raise kopf.TemporaryError(f"the study ConfigMap {study_config_map_name(name)} does not parse ({exc}); "
                                  "fix or delete it (deleting restarts the search)", delay=60) from exc
    if records is None:
        await asyncio.to_thread(kube.create_or_read, build_study_config_map(owner, []))
        records = []

    observations: dict[int, TrialObservation] = {}
    for record in records:
        if record.state != "Running" and record.state != "Pruned":
            continue
        label = trial_name(name, record.number)
        job = owned_job(trainer_jobs, namespace, label, uid)
        if record.state == "Pruned" and job is None:
            continue
        pods = owned_pods(trainer_pods, namespace, label, job)
        text = await _scrape(memo, uid, record.number, pods) if job is not None and record.state == "Running" else None
        trial = build_trial_spec(parsed, record.number, record.params)
        if job is not None and record.state == "Running" and suspend_out_of_sync(trial, job):
            await asyncio.to_thread(sync_suspend, kube, body, trial, job)  # spec.runPolicy.suspend, per trial
        observations[record.number] = observe_trial(record.number, job, pods, trial, tuning.objective.metric, now(), text,
                                                    job_label=label, namespace=namespace)

    enqueue = _enqueued(body, logger) if not records else None
    suspended = parsed.run_policy.suspend
    step = advance(tuning, records, observations, enqueue, suspended=suspended)
    if step.records != records:  # write-ahead: the records first, then the effects
        await asyncio.to_thread(kube.patch, "ConfigMap", namespace, study_config_map_name(name), {"data": study_data(step.records)})
    for number in step.stop:
        job = owned_job(trainer_jobs, namespace, trial_name(name, number), uid)
        if job is not None:
            await asyncio.to_thread(kube.delete_job, namespace, job["metadata"]["name"], uid=job["metadata"]["uid"])
    for number, params in step.start:
        blocked = await asyncio.to_thread(ensure_trial, kube, owner, parsed, number, params, memo.config.trainer)
        if blocked is not None:
            observations[number] = TrialObservation(number, "Missing", blocked.reason, blocked.message, stalled=blocked.stalled)
    for type_, reason, message in step.events:
        kopf.event(body, type=type_, reason=reason, message=message)

    new = derive_search_status(tuning, step.records, observations, previous=current,
                               generation=body.metadata.get("generation", 1), now=now(), suspended=suspended)
    write_status(body, memo, current, new, status_sender(memo, namespace, name))
    metrics.record_phase(namespace, name, new.get("phase"))


@kopf.daemon(*FTJ, id="search-ttl", when=kopf.all_([searches, _awaits_ttl]), cancellation_timeout=1.0)
@metrics.instrumented(KIND, "search-ttl")
async def expire_finished_trials(body: kopf.Body, spec: kopf.Spec, status: kopf.Status, name: str, namespace: str,
                                 uid: str, memo: kopf.Memo, trainer_jobs: kopf.Index, stopped: kopf.DaemonStopped,
                                 **_: Any) -> None:
    """`runPolicy.ttlSecondsAfterFinished` for a search: its trial Jobs (and their pods) go that
    long after the search finished; the FineTuneJob, its status and the study stay."""
    parsed, _problems = parse_search(spec, name, namespace, memo.config.allowed)
    done = parse_time(status.get("completionTime"))
    if parsed is None or parsed.tuning is None or done is None or parsed.run_policy.ttl_seconds_after_finished is None:
        return
    expires = done + timedelta(seconds=parsed.run_policy.ttl_seconds_after_finished)
    await stopped.wait(max(0.0, (expires - now()).total_seconds()))
    if stopped:
        return
    for number in range(parsed.tuning.trials):
        job = owned_job(trainer_jobs, namespace, trial_name(name, number), uid)
        if job is not None:
            await asyncio.to_thread(memo.kube.delete_job, namespace, job["metadata"]["name"], uid=job["metadata"]["uid"])


@kopf.on.event(*FTJ, id="search-forget")
def forget_search(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Drop a deleted search's scrape times (the plain handlers drop the rest of its memo)."""
    if type == "DELETED":
        scraped = getattr(memo, "search_scraped", {})
        for key in [k for k in scraped if k[0] == body.metadata.uid]:
            scraped.pop(key, None)


def _enqueued(body: kopf.Body, logger: Any) -> dict[str, Any] | None:
    raw = (body.metadata.annotations or {}).get(ANNOTATION_ENQUEUE)
    if not raw:
        return None
    try:
        params = json.loads(raw)
    except ValueError:
        logger.warning(f"{ANNOTATION_ENQUEUE} is not JSON; ignored")
        return None
    return params if isinstance(params, dict) else None


