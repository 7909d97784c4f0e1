"""kopf handlers: thin. They read the object, call the pure builders and `derive_status`,
and make API calls only through `kube.Kube`.

- `reconcile` (create / resume / spec update): validate, create the children if absent,
  bring the Job's `suspend` in line. An invalid spec fails once, permanently, into status.
- `refresh_status` (timer, while not finished): status from the in-memory indexes of Jobs
  and pods (no API polling), Events on transitions, and the level-based fixes: a missing Job
  is recreated, `suspend` re-synced. It writes status itself (`kube.patch_finetunejob_status`),
  so an API error is retried rather than ending the timer (issue 13).
- `expire_finished_job` (daemon, finished with a TTL): deletes the Job after
  `ttlSecondsAfterFinished`; the FineTuneJob and its status stay.
- `scrape_progress` (timer, Running only): progress, metrics and checkpoints from rank 0; on
  success `refresh_status` completes them from rank 0's final report (its termination message).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping

import kopf

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.api.typed import Problem
from tuneloop.api.validate import check_child_names, parse_spec
from tuneloop.operator import jobset as jobsets
from tuneloop.operator import metrics
from tuneloop.operator.allowlist import AllowLists, check_allowed
from tuneloop.operator.builders import (
    ANNOTATION_WORKLOAD_DEACTIVATED, GROUP, KIND, LABEL_FINETUNEJOB, PLURAL, VERSION, Blocked, Owner, build_children,
    check_existing_child, check_names, job_name, job_suspend_patch, service_name, service_selector_patch, unapplied_changes,
    workload_active_change,
)
from tuneloop.operator.config import OperatorConfig
from tuneloop.operator.kube import Forbidden, Kube
from tuneloop.operator.scrape import (
    fetch_trainer_metrics, final_report_pending, final_status, merge_scrape, metrics_url, parse_trainer_metrics,
)
from tuneloop.operator.status import (
    CHILD_REJECTED, INVALID_SPEC, RECOVERABLE, SUCCEEDED, TERMINAL, awaits_first_pods, derive_status, group_restart, parse_time, status_patch,
    transition_events,
)

FTJ = (GROUP, VERSION, PLURAL)
# Timer intervals are decorator arguments, so they are read once, at import.
INTERVALS = OperatorConfig.from_env()
# How long what we wrote last outranks the status the watch shows (a watch event lags by
# milliseconds). Past this, a status the object still lacks was never applied: kopf drops a
# patch it does not retry (a 409) and waits for the next event, so believing our memory for
# ever would lose the status until a restart (issue 13, tests/e2e/test_api_faults.py).
WRITTEN_TRUSTED_FOR = 10.0


# --- indexes: Jobs and pods by the FineTuneJob they belong to (kopf keeps them current) ---


@kopf.index("batch", "v1", "jobs", labels={LABEL_FINETUNEJOB: kopf.PRESENT})
def trainer_jobs(namespace: str, labels: Mapping[str, str], body: kopf.Body, **_: Any) -> dict:
    return {(namespace, labels[LABEL_FINETUNEJOB]): indexed_job(body)}


@kopf.index("v1", "pods", labels={LABEL_FINETUNEJOB: kopf.PRESENT})
def trainer_pods(namespace: str, labels: Mapping[str, str], body: kopf.Body, **_: Any) -> dict:
    return {(namespace, labels[LABEL_FINETUNEJOB]): indexed_pod(body)}


# The indexes hold every Job and pod for the operator's life, finished jobs' Jobs too, so
# they keep only what is read of them (status.py, scrape.py, builders' suspend checks).
# A whole Job is ~20 KB of Python objects, most of it the pod template (issue 15).


def _metadata(body: Mapping[str, Any]) -> dict:
    return {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}


def indexed_job(body: Mapping[str, Any]) -> dict:
    """A Job without its pod template."""
    spec = {k: v for k, v in (body.get("spec") or {}).items() if k != "template"}
    return {"metadata": _metadata(body), "spec": spec, "status": dict(body.get("status") or {})}


def indexed_pod(body: Mapping[str, Any]) -> dict:
    """A pod with only its containers' names and ports (where the trainer's metrics are served)."""
    containers = [{"name": c.get("name"), "ports": c.get("ports") or []} for c in (body.get("spec") or {}).get("containers") or ()]
    return {"metadata": _metadata(body), "spec": {"containers": containers}, "status": dict(body.get("status") or {})}


def _owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or ()
    return any(ref.get("uid") == uid for ref in refs)


def owned_job(index: kopf.Index, namespace: str, name: str, uid: str) -> dict | None:
    """This FineTuneJob's Job (a same-named predecessor's leftovers do not count)."""
    return next((job for job in index.get((namespace, name), ()) if _owned_by(job, uid)), None)


def lingering_pods(index: kopf.Index, namespace: str, name: str) -> list[dict]:
    """Pods of this name's earlier Jobs that still run: a new Job waits for them (issue 9)."""
    return [p for p in index.get((namespace, name), ())
            if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]


def owned_pods(index: kopf.Index, namespace: str, name: str, job: Mapping[str, Any] | None) -> list[dict]:
    if job is None:
        return []
    job_uid = job["metadata"].get("uid")
    pods = index.get((namespace, name), ())
    # Only the Job's own pods (the Job controller sets their ownerReferences): anyone who can
    # create a pod with our label could otherwise feed status and the scrape (issue 13).
    return [p for p in pods if _owned_by(p, job_uid)]


def uses_jobset(spec: FineTuneJobSpec | None) -> bool:
    """A multi-node job with `groupRestart: JobSet`; one node is always a plain Job (its pod is
    replaced by the Job controller, there is no group to restart)."""
    return spec is not None and spec.run_policy.group_restart == "JobSet" and spec.resources.nodes > 1


def current_job(kube: Kube, index: kopf.Index, namespace: str, name: str, uid: str,
                spec: FineTuneJobSpec | None) -> tuple[dict | None, dict | None]:
    """(the Job training now, its JobSet or None). With `groupRestart: JobSet` the Job is the
    JobSet's child of the current restart attempt, and the JobSet is read from the API: a
    kopf index on a kind the cluster may not serve would hold up every handler."""
    if not uses_jobset(spec):
        return owned_job(index, namespace, name, uid), None
    jobset = kube.read("JobSet", namespace, jobsets.jobset_name(name))
    if jobset is None or not _owned_by(jobset, uid):
        return None, None
    attempt = str(int(((jobset.get("status") or {}).get("restarts")) or 0))
    jobs = [job for job in index.get((namespace, name), ()) if _owned_by(job, jobset["metadata"]["uid"])
            and (job["metadata"].get("labels") or {}).get(jobsets.RESTART_ATTEMPT_LABEL) == attempt]
    return (jobs[0] if jobs else None), jobset


def children_for(owner: Owner, spec: FineTuneJobSpec, config: OperatorConfig) -> list[dict]:
    """The children to create, in order: a JobSet instead of the Service and Job when asked."""
    children = build_children(owner, spec, config.trainer)
    if uses_jobset(spec):
        return [children[0], jobsets.build_trainer_jobset(owner, spec, config.trainer)]
    return children


# --- shared steps ------------------------------------------------------------------------------


def parse(spec: Mapping[str, Any], name: str, namespace: str,
          allowed: AllowLists = AllowLists()) -> tuple[FineTuneJobSpec | None, list[Problem]]:
    """The typed spec and every problem with it (schema-level, meaning-level, child names).

    A bug met while parsing is a problem too: InvalidSpec in status and an Event, instead of
    kopf retrying the handler forever with nobody told (issue 13).
    """
    try:
        parsed, problems = parse_spec("FineTuneJob", dict(spec), namespace)
        if parsed is not None:
            names = check_child_names("FineTuneJob", name, parsed) or check_names(name, parsed)
            problems = problems + names + check_allowed(parsed, allowed)
        return parsed, problems
    except Exception as err:  # noqa: BLE001 - see above
        return None, [Problem("spec", f"could not be parsed ({type(err).__name__}: {err}); "
                                      "this is a Tuneloop bug, please report it with the spec")]


def parse_cached(memo: kopf.Memo, body: kopf.Body, spec: Mapping[str, Any]) -> tuple[FineTuneJobSpec | None, list[Problem]]:
    """`parse`, once per generation: it costs ~1 ms, the rest of a status pass ~0.05 ms."""
    meta = body.metadata
    key = meta.get("generation")
    cached = memo.parsed.get(meta.uid)
    if cached is None or cached[0] != key or key is None:
        cached = (key, parse(spec, meta.name, meta.namespace, memo.config.allowed))
        memo.parsed[meta.uid] = cached
    return cached[1]


def now() -> datetime:
    return datetime.now(timezone.utc)


# Controller "expectations", as Kubernetes' own Job and ReplicaSet controllers keep them: a Job
# made moments ago may not be in the index yet when the watch lags behind (a busy API server,
# 1,000 jobs at once). Creating it again costs five requests per job and status pass and
# deepens the lag (issue 15, bench/operator_scale.py); past this many seconds unseen, it was
# deleted before we ever saw it, and is made again.
JOB_EXPECTED_FOR = 60.0


def awaiting_job(created_at: float | None, now: float, grace: float = JOB_EXPECTED_FOR) -> bool:
    """Whether a Job missing from the index was created by us too recently to make it again."""
    return created_at is not None and now - created_at < grace


# A Job's pods normally exist within a second of the Job. One still without any is worth a look
# at its FailedCreate Events (the pods the API server refused), but not on every status pass:
# 1,000 Jobs without pods listed Events 180 times a second (bench/operator_scale.py). The first
# read comes EVENTS_FIRST_WAIT after the Job is first seen without pods, then the wait doubles
# up to EVENTS_MAX_WAIT; the last read's words stand in between.
EVENTS_FIRST_WAIT, EVENTS_MAX_WAIT = 5.0, 300.0


@dataclass(frozen=True)
class EventsWatch:
    """When to read a pod-less Job's FailedCreate Events next, and what the last read said."""

    job_uid: str
    next_at: float
    wait: float = EVENTS_FIRST_WAIT
    message: str | None = None

    @classmethod
    def first_seen(cls, job_uid: str, now: float) -> EventsWatch:
        return cls(job_uid, now + EVENTS_FIRST_WAIT)

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def after_read(self, now: float, message: str | None) -> EventsWatch:
        wait = min(2 * self.wait, EVENTS_MAX_WAIT)
        return replace(self, next_at=now + wait, wait=wait, message=message)


async def failed_create_message(memo: kopf.Memo, namespace: str, uid: str, job: Mapping[str, Any] | None,
                                pods: list[Mapping[str, Any]]) -> str | None:
    """Why the FineTuneJob `uid`'s Job has no pod, from its FailedCreate Events (the pods the API
    server refused exist only there), read on the EventsWatch schedule; None while it has pods."""
    if not awaits_first_pods(job, pods):
        memo.failed_create.pop(uid, None)
        return None
    assert job is not None
    job_uid, clock = job["metadata"]["uid"], time.monotonic()
    watch = memo.failed_create.get(uid)
    if watch is None or watch.job_uid != job_uid:
        watch = memo.failed_create[uid] = EventsWatch.first_seen(job_uid, clock)
    elif watch.due(clock):
        events = await asyncio.to_thread(memo.kube.failed_create_events, namespace, job_uid)
        watch = memo.failed_create[uid] = watch.after_read(clock, events[-1].get("message") if events else None)
    return watch.message


def write_status(body: kopf.Body, memo: kopf.Memo, current: Mapping[str, Any], new: Mapping[str, Any],
                 send: Callable[[dict[str, Any]], None]) -> None:
    """Send what changed (nothing: no API call), then an Event per transition. `send` is
    kopf's `patch.status.update` in change handlers; timers send through `kube.patch_finetunejob_status`
    (see `status_sender`)."""
    changes = status_patch(current, new)
    if not changes:
        return
    send(changes)
    memo.written[body.metadata.uid] = (time.monotonic(), {**current, **changes})
    for type_, reason, message in transition_events(current, {**current, **changes}):
        kopf.event(body, type=type_, reason=reason, message=message)
    metrics.record_transition(current, {**current, **changes}, body.metadata.get("creationTimestamp"), time.time())


def status_sender(memo: kopf.Memo, namespace: str, name: str) -> Callable[[dict[str, Any]], None]:
    """Status writes of a timer, straight to the API: kopf applies a timer's `patch` after the
    handler, and an API error there ends the timer for that object until a restart (a 409,
    or a 5xx past kopf's retries), so the status would freeze (issue 13)."""
    return lambda changes: memo.kube.patch_finetunejob_status(namespace, name, changes)


def last_status(body: kopf.Body, memo: kopf.Memo, status: Mapping[str, Any]) -> dict:
    # What we wrote last wins over a watch event that has not caught up yet, so a
    # transition is never announced twice; but not for longer than WRITTEN_TRUSTED_FOR.
    written_at, written = memo.written.get(body.metadata.uid, (0.0, {}))
    if time.monotonic() - written_at > WRITTEN_TRUSTED_FOR:
        return dict(status)
    return {**dict(status), **written}


def reject(body: kopf.Body, memo: kopf.Memo, status: Mapping[str, Any], problems: list[Problem], patch: kopf.Patch,
           reason: str = INVALID_SPEC) -> None:
    """Failed for good, with the exact problems in status and an Event; no retry loop."""
    current = last_status(body, memo, status)
    new = derive_status(None, [], spec=None, problems=problems, generation=body.metadata.get("generation", 1),
                        previous=current, now=now(), invalid_reason=reason)
    write_status(body, memo, current, new, patch.status.update)
    error = kopf.PermanentError(f"{reason}: {new['message']}")
    error.invalid_spec = True  # type: ignore[attr-defined]  # counted as `invalid` in metrics
    raise error


def ensure_children(kube: Kube, body: kopf.Body, owner: Owner, spec: FineTuneJobSpec, config: OperatorConfig) -> Blocked | None:
    """Create whatever child is missing, in order, the Job last. Never a second Job.

    A 409 is read, not trusted: a predecessor's or a stranger's child of the same name stops
    here (Blocked), before the Job, so no pod mounts a config rendered from another spec.
    The owner is read first: a handler still running for a FineTuneJob just deleted (and
    perhaps re-created under its name) must not make children for it.
    """
    live = kube.read(KIND, owner.namespace, owner.name)
    live_meta = (live or {}).get("metadata") or {}
    if live_meta.get("uid") != owner.uid or live_meta.get("deletionTimestamp"):
        return None
    if uses_jobset(spec) and not kube.jobset_served():
        return Blocked("JobSetNotInstalled", f"spec.runPolicy.groupRestart is JobSet, but the cluster does not serve "
                       f"{jobsets.GROUP}/{jobsets.VERSION}: install JobSet, or set groupRestart: Operator", stalled=True)
    for manifest in children_for(owner, spec, config):
        meta = manifest["metadata"]
        try:
            existing = kube.create_or_read(manifest)
        except Forbidden as exc:
            return Blocked("Forbidden", f"{exc}; grant the operator's ServiceAccount this (see the chart's RBAC: "
                           f"blockOwnerDeletion needs update on finetunejobs/finalizers)", stalled=True)
        if existing is None:
            if manifest["kind"] in ("Job", "JobSet"):
                kopf.event(body, type="Normal", reason="Created", message=f"created {manifest['kind']} {meta['name']}")
            continue
        blocked, update = check_existing_child(existing, manifest, owner)
        if blocked is not None:
            return blocked
        if update is not None:
            kube.patch(manifest["kind"], meta["namespace"], meta["name"], update)
    if spec.resources.nodes > 1 and not uses_jobset(spec):  # JobSet makes and points its own Service
        # The Job's uid exists only now: point its headless Service at its pods at once, so
        # they resolve each other from the start (`refresh_status` re-checks it every pass).
        job = kube.read("Job", owner.namespace, job_name(owner.name))
        if job is not None and _owned_by(job, owner.uid):
            point_service_at_job(kube, owner.namespace, owner.name, job)
    return None


def point_service_at_job(kube: Kube, namespace: str, name: str, job: Mapping[str, Any]) -> bool:
    """Select only this Job's pods in the headless Service (never an earlier Job's, still
    Terminating under the same hostnames); False when there is no Service (yet)."""
    service = kube.read("Service", namespace, service_name(name))
    if service is None:
        return False
    change = service_selector_patch(service, job)
    if change is not None:
        kube.patch("Service", namespace, service_name(name), change)
    return True


def sync_suspend(kube: Kube, body: kopf.Body, spec: FineTuneJobSpec, job: Mapping[str, Any] | None) -> None:
    """`runPolicy.suspend` onto the Job, or the JobSet (which suspends its Jobs)."""
    if job is None:
        return
    meta, kind = job["metadata"], job.get("kind") or "Job"
    change = job_suspend_patch(spec, job)
    if change is not None:
        kube.patch(kind, meta["namespace"], meta["name"], change)
    active = workload_active_change(spec, job)
    if active is not None and kube.set_workload_active(meta["namespace"], meta["uid"], active):
        mark = None if active else "true"
        kube.patch(kind, meta["namespace"], meta["name"], {"metadata": {"annotations": {ANNOTATION_WORKLOAD_DEACTIVATED: mark}}})


def suspend_out_of_sync(spec: FineTuneJobSpec, job: Mapping[str, Any]) -> bool:
    return job_suspend_patch(spec, job) is not None or workload_active_change(spec, job) is not None


# --- handlers ------------------------------------------------------------------------------------


def _plain(spec: Mapping[str, Any], **_: Any) -> bool:
    """Not a search: a FineTuneJob with spec.tuning is run by tuneloop.operator.tuning (issue 14)."""
    return not (spec or {}).get("tuning")


@kopf.on.resume(*FTJ, id="resume", when=_plain)
@kopf.on.create(*FTJ, id="create", when=_plain)
@kopf.on.update(*FTJ, field="spec", id="update", when=_plain)
@metrics.instrumented(KIND, "reconcile")
def reconcile(body: kopf.Body, spec: kopf.Spec, status: kopf.Status, name: str, namespace: str, uid: str,
              patch: kopf.Patch, memo: kopf.Memo, trainer_jobs: kopf.Index, trainer_pods: kopf.Index, old: Any, new: Any,
              reason: str, **_: Any) -> None:
    if reason == "resume" and is_finished(last_status(body, memo, status)):
        # Every operator start resumes every FineTuneJob ever finished: count it, nothing more
        # (parsing alone cost ~1 ms a job; issue 15, bench/operator_scale.py).
        metrics.record_phase(namespace, name, status.get("phase"))
        return
    parsed, problems = parse(spec, name, namespace, memo.config.allowed)
    if problems:
        reject(body, memo, status, problems, patch)
    assert parsed is not None
    current = last_status(body, memo, status)
    metrics.record_phase(namespace, name, current.get("phase"))
    if is_finished(current):
        return  # its Job may be gone on purpose (TTL); never train again
    job, jobset = current_job(memo.kube, trainer_jobs, namespace, name, uid, parsed)
    lingering = lingering_pods(trainer_pods, namespace, name) if job is None else []
    blocked = None
    if job is None and jobset is None and not lingering:  # else the status timer creates it once they are gone
        try:
            blocked = ensure_children(memo.kube, body, Owner(name, namespace, uid), parsed, memo.config)
            if blocked is None:
                memo.job_created[uid] = time.monotonic()
        except kopf.PermanentError as exc:  # the API server refused a child we built from this spec
            reject(body, memo, status, [Problem("spec", str(exc))], patch, reason=CHILD_REJECTED)
    else:
        sync_suspend(memo.kube, body, parsed, jobset or job)
        ignored = unapplied_changes(old or {}, new or {}) if reason == "update" else []
        if ignored:
            kopf.event(body, type="Warning", reason="SpecChangeNotApplied",
                       message=f"the running Job keeps its pod template; not applied: {', '.join(ignored)}")
    if not current.get("phase") or current.get("reason") in RECOVERABLE or blocked is not None:
        # The first status (or the first after a fixed spec); the `status` timer takes it from here.
        new = derive_status(job, lingering, spec=parsed, generation=body.metadata.get("generation", 1), previous=current,
                            now=now(), blocked=blocked, jobset=jobset)
        new["jobName"] = job_name(name)
        write_status(body, memo, current, new, patch.status.update)


def _age(body: kopf.Body) -> float:
    created = parse_time(body.metadata.get("creationTimestamp"))
    return (now() - created).total_seconds() if created is not None else float("inf")


def is_finished(status: Mapping[str, Any]) -> bool:
    """Succeeded or Failed for good (an invalid spec can still be fixed)."""
    return (status or {}).get("phase") in TERMINAL and (status or {}).get("reason") not in RECOVERABLE


def _is_active(status: Mapping[str, Any], **_: Any) -> bool:
    # Until finished: finished jobs, which pile up, cost nothing. A job without a phase yet
    # counts too: `reconcile` writes its first status, and when kopf could not apply that
    # patch (it drops a 409 until the object's next event) this timer makes up for it.
    return (status or {}).get("phase") not in TERMINAL


def _awaits_ttl(spec: Mapping[str, Any], status: Mapping[str, Any], **_: Any) -> bool:
    return is_finished(status) and (spec.get("runPolicy") or {}).get("ttlSecondsAfterFinished") is not None


@kopf.timer(*FTJ, id="status", interval=INTERVALS.status_interval, when=kopf.all_([_plain, _is_active]))
@metrics.instrumented(KIND, "status")
async def refresh_status(body: kopf.Body, spec: kopf.Spec, status: kopf.Status, name: str, namespace: str, uid: str,
                         memo: kopf.Memo, trainer_jobs: kopf.Index, trainer_pods: kopf.Index,
                         **_: Any) -> None:
    current = last_status(body, memo, status)
    if is_finished(current) or body.metadata.get("deletionTimestamp"):
        return  # the watch event that stops this timer is on its way; never re-create while deleting
    if not current.get("phase") and _age(body) < WRITTEN_TRUSTED_FOR:
        return  # `reconcile` is writing the first status; this timer takes over if it was lost
    config: OperatorConfig = memo.config
    parsed, problems = parse_cached(memo, body, spec)
    if uses_jobset(parsed):
        job, jobset = await asyncio.to_thread(current_job, memo.kube, trainer_jobs, namespace, name, uid, parsed)
    else:
        job, jobset = owned_job(trainer_jobs, namespace, name, uid), None

    pods = owned_pods(trainer_pods, namespace, name, job) if job is not None else lingering_pods(trainer_pods, namespace, name)
    restarted = blocked = None
    if job is not None:
        memo.job_created.pop(uid, None)  # seen: a later disappearance is a deletion
    if parsed is not None and not problems:
        if job is not None and jobset is None and parsed.resources.nodes > 1 and memo.service_job.get(uid) != job["metadata"]["uid"]:
            # Level-based: a Service patch lost to an error or an operator restart is made here.
            if await asyncio.to_thread(point_service_at_job, memo.kube, namespace, name, job):
                memo.service_job[uid] = job["metadata"]["uid"]
        if job is None and jobset is None and not pods and awaiting_job(memo.job_created.get(uid), time.monotonic()):
            pass  # made moments ago; the index has not caught up yet
        elif job is None and jobset is None and not pods:
            # Deleted behind our back, or by a group restart: (re)create it; the trainer
            # resumes from the newest checkpoint.
            blocked = await asyncio.to_thread(ensure_children, memo.kube, body, Owner(name, namespace, uid), parsed, config)
            if blocked is None:
                memo.job_created[uid] = time.monotonic()
        elif job is None:
            pass  # the previous Job's pods still run: never two generations at once
        elif jobset is None and (restart := group_restart(job, pods, parsed, int(current.get("attempts") or 1), now())):
            meta = job["metadata"]
            deleted = await asyncio.to_thread(memo.kube.delete_job, namespace, meta["name"], uid=meta["uid"], foreground=True)
            # Counted once per Job: until the watch shows it deleting, a later pass deletes it again.
            if deleted and memo.restarted.get(uid) != meta["uid"]:
                memo.restarted[uid] = meta["uid"]
                restarted = restart
                kopf.event(body, type="Warning", reason="GroupRestart", message=restart.message)
        elif suspend_out_of_sync(parsed, jobset or job):  # pure check first: no thread hop per pass
            await asyncio.to_thread(sync_suspend, memo.kube, body, parsed, jobset or job)

    failed_create = await failed_create_message(memo, namespace, uid, job, pods)
    new = derive_status(job, pods, spec=parsed, problems=problems, generation=body.metadata.get("generation", 1),
                        previous=current, now=now(), unschedulable_after=config.unschedulable_after, blocked=blocked,
                        failed_create=failed_create, jobset=jobset)
    if restarted is not None and restarted.counted:
        new["attempts"] = int(current.get("attempts") or 1) + 1
    if new.get("phase") == SUCCEEDED and parsed is not None:
        if final_report_pending(job, pods, now()):
            return  # the pod's final state is a watch event behind the Job's: its report comes next pass
        # Succeeded is written once (this timer then stops), with the trainer's final report.
        new.update(final_status(current, pods, parsed.output.uri))
    await asyncio.to_thread(write_status, body, memo, current, new, status_sender(memo, namespace, name))
    metrics.record_phase(namespace, name, new.get("phase"), attempts=new.get("attempts"))


@kopf.daemon(*FTJ, id="ttl", when=kopf.all_([_plain, _awaits_ttl]), cancellation_timeout=1.0)
@metrics.instrumented(KIND, "ttl")
async def expire_finished_job(body: kopf.Body, spec: kopf.Spec, status: kopf.Status, name: str, namespace: str, uid: str,
                              memo: kopf.Memo, trainer_jobs: kopf.Index, stopped: kopf.DaemonStopped, **_: Any) -> None:
    """Wait until `ttlSecondsAfterFinished` after completion, delete the Job, and end.

    The TTL is ours, not the Job's: Kubernetes' TTL controller could delete the Job before
    its final state reached the status.
    """
    parsed, _problems = parse(spec, name, namespace)
    done = parse_time(status.get("completionTime"))
    if parsed is None or done is None or parsed.run_policy.ttl_seconds_after_finished is None:
        return
    expires = done + timedelta(seconds=parsed.run_policy.ttl_seconds_after_finished)
    await stopped.wait(max(0.0, (expires - now()).total_seconds()))
    if stopped:
        return
    if uses_jobset(parsed):  # the JobSet goes, and its Jobs and pods with it
        _child, job = await asyncio.to_thread(current_job, memo.kube, trainer_jobs, namespace, name, uid, parsed)
    else:
        job = owned_job(trainer_jobs, namespace, name, uid)
    if job is not None:
        await asyncio.to_thread(delete_finished_job, memo.kube, body, job, parsed)


def delete_finished_job(kube: Kube, body: kopf.Body, job: Mapping[str, Any], spec: FineTuneJobSpec) -> None:
    """TTL done by us, after the final status is written: the FineTuneJob and its status stay."""
    meta, kind = job["metadata"], job.get("kind") or "Job"
    deleted = kube.delete(kind, meta["namespace"], meta["name"]) if kind == "JobSet" else kube.delete_job(meta["namespace"], meta["name"])
    if deleted:
        kopf.event(body, type="Normal", reason="JobDeleted",
                   message=f"removed {kind} {meta['name']} and its pods after "
                           f"ttlSecondsAfterFinished={spec.run_policy.ttl_seconds_after_finished}; the status stays")


def _is_running(status: Mapping[str, Any], **_: Any) -> bool:
    return (status or {}).get("phase") == "Running"


@kopf.timer(*FTJ, id="progress", interval=INTERVALS.scrape_interval, when=kopf.all_([_plain, _is_running]))
@metrics.instrumented(KIND, "progress")
async def scrape_progress(body: kopf.Body, spec: kopf.Spec, status: kopf.Status, name: str, namespace: str, uid: str,
                          memo: kopf.Memo, trainer_jobs: kopf.Index, trainer_pods: kopf.Index, logger: Any, **_: Any) -> None:
    parsed, _problems = parse_cached(memo, body, spec)
    if uses_jobset(parsed):
        job, _jobset = await asyncio.to_thread(current_job, memo.kube, trainer_jobs, namespace, name, uid, parsed)
    else:
        job = owned_job(trainer_jobs, namespace, name, uid)
    url = metrics_url(owned_pods(trainer_pods, namespace, name, job))
    if url is None:
        return
    try:
        text = await fetch_trainer_metrics(url, timeout=memo.config.scrape_timeout)
    except Exception as exc:  # unreachable or mid-restart: the job itself is unaffected
        logger.debug(f"No progress from {url}: {exc!r}")
        return
    if is_finished(last_status(body, memo, status)):
        return  # the final report is in status; a scrape from the last moments would undo it
    changes = merge_scrape(status, parse_trainer_metrics(text, job=name, namespace=namespace))
    if changes:
        await asyncio.to_thread(status_sender(memo, namespace, name), changes)


@kopf.on.delete(*FTJ, id="forget", optional=True)
def forget(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Children go with the garbage collector (ownerReferences); data in S3 is never touched."""
    memo.written.pop(body.metadata.uid, None)
    memo.parsed.pop(body.metadata.uid, None)
    getattr(memo, "restarted", {}).pop(body.metadata.uid, None)
    getattr(memo, "service_job", {}).pop(body.metadata.uid, None)
    getattr(memo, "job_created", {}).pop(body.metadata.uid, None)
    getattr(memo, "failed_create", {}).pop(body.metadata.uid, None)
    metrics.record_phase(body.metadata.namespace, body.metadata.name, None)


def _is_deletion(type: str, **_: Any) -> bool:
    return type == "DELETED"


# The filter, not a check inside: kopf runs (and logs) an event handler for every watch event
# of every FineTuneJob, 1,000 of them on each operator start (issue 15, bench/operator_scale.py).
@kopf.on.event(*FTJ, id="forget-deleted", when=_is_deletion)
def forget_deleted(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """The same on the DELETED event: a finished FineTuneJob has no kopf finalizer left (its
    handlers are done), so the delete handler above never runs for it, and its memo and
    phase gauge would stay for the life of the operator (issue 9)."""
    forget(body=body, memo=memo)


@kopf.on.probe(id="finetunejobs")
def count_tracked(memo: kopf.Memo, **_: Any) -> int:
    return len(memo.written)
