"""kopf handlers of the MaintenancePolicy controller: thin. One timer per policy gathers the
observations (kopf indexes of its FineTuneJobs, evaluation Jobs and their pods; one Prometheus
query when due; the manual annotation), asks `decide`, and carries the action out through
`kube.Kube`: create, publish, delete, then the status patch and Events.

Order within a pass, so that a crash anywhere repeats work rather than losing or doubling it:
children are created first (deterministic names; 409 is success; a revision created just before
a crash is adopted from the index), the promotion target is written next (a merge patch of the
same value is idempotent), the status last.

Settings (environment, read at import: the timer interval is a decorator argument)
    TUNELOOP_POLICY_INTERVAL        seconds between passes (default 10)
    TUNELOOP_POLICY_QUERY_TIMEOUT   Prometheus query timeout (default 5)
    TUNELOOP_POLICY_STALLED_AFTER   Prometheus unreachable this long -> Stalled (default 60)
    TUNELOOP_POLICY_BACKOFF         first retry delay after a failed query, doubling (default 10)
    TUNELOOP_POLICY_BACKOFF_MAX     longest retry delay (default 300)
    TUNELOOP_POLICY_DATA_INTERVAL   seconds between newData checks (default 300)
"""

from __future__ import annotations

import asyncio
import os
from datetime import datetime, timezone
from typing import Any, Mapping

import kopf

from tuneloop.api.crds import GROUP, VERSION
from tuneloop.api.policy import MaintenancePolicySpec
from tuneloop.api.validate import parse_spec
from tuneloop.operator import metrics as operator_metrics
from tuneloop.operator.builders import Owner, check_names
from tuneloop.operator.kube import Kube
from tuneloop.operator.policy import metrics
from tuneloop.operator.policy.builders import (
    KIND, LABEL_POLICY, PLURAL, build_evaluation, build_revision, read_field, revision_spec, target_patch,
)
from tuneloop.operator.policy.decide import decide
from tuneloop.operator.policy.model import DATA, Action, Observations, Tuning, revision_name
from tuneloop.operator.policy.observe import evaluation_run, owned_by, query_prometheus, revision_run
from tuneloop.operator.status import parse_time, status_patch

MPOL = (GROUP, VERSION, PLURAL)
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


def _env(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


INTERVAL = _env("TUNELOOP_POLICY_INTERVAL", 10.0)
QUERY_TIMEOUT = _env("TUNELOOP_POLICY_QUERY_TIMEOUT", 5.0)
TUNING = Tuning(stalled_after=_env("TUNELOOP_POLICY_STALLED_AFTER", Tuning.stalled_after),
                backoff_base=_env("TUNELOOP_POLICY_BACKOFF", Tuning.backoff_base),
                backoff_max=_env("TUNELOOP_POLICY_BACKOFF_MAX", Tuning.backoff_max),
                data_interval=_env("TUNELOOP_POLICY_DATA_INTERVAL", Tuning.data_interval))


# --- indexes: what each policy owns, kept current by kopf's watches (no polling) --------------------


@kopf.index(GROUP, VERSION, "finetunejobs", labels={LABEL_POLICY: kopf.PRESENT})
def policy_revisions(namespace: str, labels: Mapping[str, str], body: kopf.Body, **_: Any) -> dict:
    return {(namespace, labels[LABEL_POLICY]): dict(body)}


@kopf.index("batch", "v1", "jobs", labels={LABEL_POLICY: kopf.PRESENT})
def policy_jobs(namespace: str, labels: Mapping[str, str], body: kopf.Body, **_: Any) -> dict:
    return {(namespace, labels[LABEL_POLICY]): dict(body)}


@kopf.index("v1", "pods", labels={LABEL_POLICY: kopf.PRESENT})
def policy_pods(namespace: str, labels: Mapping[str, str], body: kopf.Body, **_: Any) -> dict:
    # Keyed by Job: the pods of one evaluation run.
    return {(namespace, labels.get(JOB_NAME_LABEL) or labels.get("job-name", "")): dict(body)}


# --- gathering -------------------------------------------------------------------------------------------


def now() -> datetime:
    return datetime.now(timezone.utc)


def parse(spec: Mapping[str, Any], name: str, namespace: str) -> tuple[MaintenancePolicySpec | None, list[str]]:
    parsed, problems = parse_spec(KIND, dict(spec), namespace)
    found = [str(p) for p in problems]
    if parsed is not None and not problems:
        # The revisions' own children must fit Kubernetes' name limits: say so before creating any.
        longest = revision_name(name, 9999)
        found += [f"metadata.name: {p.message.replace('this job', 'this policy (its revisions are ' + name + '-r<N>)')}"
                  for p in check_names(longest, revision_spec(parsed, "r9999"))]
    return parsed, found


async def observe(spec: MaintenancePolicySpec | None, problems: list[str], body: kopf.Body, state: Mapping[str, Any],
                  revisions: kopf.Index, jobs: kopf.Index, pods: kopf.Index, moment: datetime,
                  refused: Mapping[str, str] | None = None) -> Observations:
    meta = body.metadata
    key, uid = (meta.namespace, meta.name), meta.uid
    runs = {f["metadata"]["name"]: revision_run(f) for f in revisions.get(key, ()) if owned_by(f, uid)}
    evaluations = {}
    for job in jobs.get(key, ()):
        if owned_by(job, uid):
            name = job["metadata"]["name"]
            job_pods = [p for p in pods.get((meta.namespace, name), ()) if owned_by(p, job["metadata"].get("uid", ""))]
            evaluations[name] = evaluation_run(job, job_pods, moment)
    reading = None
    trigger = spec.triggers.metric if spec is not None else None
    if trigger is not None and trigger.source == "prometheus" and trigger.prometheus_url and trigger.query:
        retry_at = parse_time((state.get("metricWatch") or {}).get("retryAt"))
        if retry_at is None or moment >= retry_at:
            reading = await query_prometheus(trigger.prometheus_url, trigger.query, QUERY_TIMEOUT)
    manual = None
    if spec is not None and spec.triggers.manual is not None:
        manual = meta.annotations.get(spec.triggers.manual.annotation) or None
    created = parse_time(meta.get("creationTimestamp")) or moment
    return Observations(name=meta.name, created=created, generation=meta.get("generation") or 1, revisions=runs,
                        evaluations=evaluations, prometheus=reading, manual=manual, problems=tuple(problems),
                        refused=dict(refused or {}))


# --- carrying out ---------------------------------------------------------------------------------------------


def carry_out(kube: Kube, body: kopf.Body, owner: Owner, spec: MaintenancePolicySpec, action: Action,
              known_jobs: set[str], memo: kopf.Memo, logger: Any, champion_params: Mapping[str, Any] | None = None,
              ) -> dict[str, Any]:
    """Create, publish, delete; returns the status to write (with `published` undone if the
    target could not be written: the next pass tries again)."""
    status = dict(action.status)
    for new in action.create:
        try:
            kube.create(build_revision(owner, spec, new.number, new.name, champion_params))
        except kopf.PermanentError as exc:
            # Refused (400/422: a webhook, a schema): the next pass marks the revision Failed
            # in status (decide), instead of failing every pass before the status is written.
            logger.error(f"Revision {new.name} refused: {exc}")
            memo.setdefault("policy_refused", {}).setdefault(owner.uid, {})[new.name] = str(exc)
    for request in action.evaluate:
        if request.name in known_jobs:
            continue
        for manifest in build_evaluation(owner, spec, request, memo.config.trainer):
            if kube.create(manifest) and manifest["kind"] == "Job" and request.purpose != DATA:
                kopf.event(body, type="Normal", reason="EvaluationStarted",
                           message=f"{request.purpose} evaluation {request.name}: {', '.join(request.models)}")
    if action.publish:
        try:
            publish(kube, spec, owner.namespace, action.publish)
        except (kopf.TemporaryError, kopf.PermanentError) as exc:
            # Not published: the next pass tries again. One Event per distinct error, not one per pass.
            status["published"] = (body.get("status") or {}).get("published")
            logger.warning(f"Promotion target not written: {exc}")
            errors = memo.setdefault("policy_publish_errors", {})
            if errors.get(owner.uid) != str(exc):
                errors[owner.uid] = str(exc)
                kopf.event(body, type="Warning", reason="PromotionTargetFailed", message=f"{action.publish}: {exc}")
        else:
            memo.setdefault("policy_publish_errors", {}).pop(owner.uid, None)
    for name in action.delete_revisions:
        kube.delete("FineTuneJob", owner.namespace, name)
    for name in action.delete_evaluations:
        kube.delete("Job", owner.namespace, name)
        kube.delete("ConfigMap", owner.namespace, f"{name}-config")
    return status


def publish(kube: Kube, spec: MaintenancePolicySpec, namespace: str, model_uri: str) -> None:
    """Write the champion's model URI to the promotion target (nothing for type Status)."""
    found = target_patch(spec, model_uri)
    if found is None:
        return
    api_version, kind, name, what, patch = found
    if kind == "ConfigMap":
        kube.patch_or_create("ConfigMap", namespace, name, patch, f"publish to {what}")
        return
    path = kube.object_path(api_version, kind, namespace, name)
    if kube.read_target(path) is None:
        raise kopf.TemporaryError(f"promotion target {api_version} {kind} {namespace}/{name} does not exist", delay=30)
    kube.patch_target(path, patch, f"publish to {what}")
    field = spec.promotion.target.object_field
    assert field is not None
    if read_field(kube.read_target(path), field.field_path) != model_uri:  # e.g. pruned by its schema: say so, loudly
        raise kopf.PermanentError(f"{kind} {name} did not keep {field.field_path}; check the field path")


# --- the timer ------------------------------------------------------------------------------------------------------


@kopf.timer(*MPOL, id="policy", interval=INTERVAL)
@operator_metrics.instrumented(KIND, "policy")
async def maintain(body: kopf.Body, spec: kopf.Spec, status: kopf.Status, name: str, namespace: str, uid: str,
                   memo: kopf.Memo, logger: Any, policy_revisions: kopf.Index,
                   policy_jobs: kopf.Index, policy_pods: kopf.Index, **_: Any) -> None:
    written = memo.setdefault("policy_written", {})
    # What we wrote last wins over a watch event that has not caught up yet (as handlers.last_status).
    state = {**dict(status), **written.get(uid, {})}
    parsed, problems = parse(spec, name, namespace)
    moment = now()
    obs = await observe(parsed, problems, body, state, policy_revisions, policy_jobs, policy_pods, moment,
                        memo.get("policy_refused", {}).get(uid))
    action = decide(parsed if not problems else None, obs, state, moment, TUNING)
    new = action.status
    if parsed is not None and not problems:
        known = {j["metadata"]["name"] for j in policy_jobs.get((namespace, name), ()) if owned_by(j, uid)}
        champion = obs.revisions.get(((new.get("champion") or {}).get("job")) or "")
        new = await asyncio.to_thread(carry_out, memo.kube, body, Owner(name, namespace, uid), parsed, action, known,
                                      memo, logger, champion.best_params if champion else None)
    for type_, reason, message in action.events:
        kopf.event(body, type=type_, reason=reason, message=message)
    changes = status_patch(state, new)
    if changes:
        # Straight to the API, not kopf's `patch`: kopf applies a timer's patch after the handler,
        # and an API error there (a 409, a 5xx past its retries) ends this policy's timer until
        # the operator restarts; ours is a TemporaryError and the timer retries (issue 13).
        await asyncio.to_thread(memo.kube.patch_policy_status, namespace, name, changes)
        written[uid] = {**state, **changes}
    trigger = parsed.triggers.metric if parsed is not None else None
    metrics.record(namespace, name, new, trigger.threshold if trigger else None, retrained=action.retrained,
                   promoted=action.promoted, rejected=action.rejected)


@kopf.on.delete(*MPOL, id="forget-policy", optional=True)
def forget(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Revisions and evaluations go with the garbage collector; the promotion target and S3 stay."""
    memo.setdefault("policy_written", {}).pop(body.metadata.uid, None)
    memo.setdefault("policy_refused", {}).pop(body.metadata.uid, None)
    metrics.forget(body.metadata.namespace, body.metadata.name)
