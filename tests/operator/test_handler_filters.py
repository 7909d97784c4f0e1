"""Which handlers kopf runs for which FineTuneJob: their `when` filters, read from kopf's own
registry. At 1,000 jobs every handler kopf runs per watch event or per restart is a cost paid
1,000 times (issue 15, bench/operator_scale.py), so what finished jobs trigger is pinned here.
"""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from tuneloop.operator import handlers

SUCCEEDED = {"phase": "Succeeded", "reason": "Completed"}
RUNNING = {"phase": "Running", "reason": "Training"}


def registered(handler_id: str) -> Any:
    registry = kopf.get_default_registry()
    for sub in (registry._watching, registry._changing, registry._spawning):
        for handler in sub.get_all_handlers():
            if handler.id == handler_id:
                return handler
    raise LookupError(handler_id)


def runs(handler_id: str, **kwargs: Any) -> bool:
    """Whether kopf would call the handler, by its `when` filter, for an object like this."""
    handler = registered(handler_id)
    return handler.when is None or bool(handler.when(**{"spec": {}, "status": {}, "type": None, **kwargs}))


@pytest.mark.parametrize("event, expected", [("ADDED", False), ("MODIFIED", False), (None, False), ("DELETED", True)])
def test_forget_deleted_runs_only_for_the_deleted_event(event: str | None, expected: bool) -> None:
    assert runs("forget-deleted", type=event) is expected


# No phase yet: the timer runs, and takes over the first status if `reconcile`'s was lost (issue 13).
@pytest.mark.parametrize("status, expected", [({}, True), (RUNNING, True), (SUCCEEDED, False)])
def test_the_status_timer_runs_only_while_a_job_is_active(status: dict, expected: bool) -> None:
    assert runs("status", status=status) is expected


def test_a_restart_resumes_a_finished_job_without_parsing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only its phase gauge is set again; its spec is not parsed and nothing is looked up."""
    from tuneloop.operator import metrics
    from tuneloop.operator.config import OperatorConfig

    parsed: list[str] = []
    monkeypatch.setattr(handlers, "parse", lambda spec, name, *args: parsed.append(name) or (None, []))
    body = kopf.Body({"metadata": {"name": "done", "namespace": "ml", "uid": "u-done", "generation": 1}})
    memo = kopf.Memo(config=OperatorConfig(), written={}, parsed={})
    handlers.reconcile(body=body, spec={}, status=SUCCEEDED, name="done", namespace="ml", uid="u-done", patch=kopf.Patch(),
                       memo=memo, trainer_jobs=None, trainer_pods=None, old=None, new=None, reason="resume")
    assert parsed == [] and memo.written == {}
    assert metrics._phase_of[("ml", "done")] == "Succeeded"


SPEC = {"task": "sequence-classification", "model": {"source": "s3://models/base/minilm/"},
        "dataset": {"train": "s3://data/tickets/train.csv"}, "output": {"uri": "s3://models/out/demo/"},
        "resources": {"gpusPerNode": 0, "cpu": "1", "memory": "2Gi"}}


def created_finetunejob(kube: Any, name: str) -> tuple[kopf.Body, str]:
    """A FineTuneJob in the emulator (the status pass writes its status there), and its uid."""
    from tuneloop.emulator.client import JsonApi, resource_path
    from support.manifests import finetunejob

    namespace = kube.create_namespace()
    manifest = finetunejob(name)
    manifest["metadata"]["namespace"] = namespace
    made = JsonApi(kube.kubeconfig).create(resource_path("tuneloop.dev/v1alpha1", "finetunejobs", namespace), manifest)
    return kopf.Body(made), namespace


def status_pass(kube: Any, body: kopf.Body, namespace: str, job_created: dict, trainer_jobs: dict,
                memo: kopf.Memo | None = None) -> kopf.Memo:
    import asyncio

    from tuneloop.operator.config import OperatorConfig
    from tuneloop.operator.kube import Kube

    meta = body["metadata"]
    memo = memo or kopf.Memo(config=OperatorConfig(), written={}, parsed={}, restarted={}, service_job={}, job_created=job_created,
                             failed_create={}, kube=Kube(kube.api_client))
    asyncio.run(handlers.refresh_status(body=body, spec=body["spec"], status={"phase": "Pending", "reason": "CreatingJob"},
                                        name=meta["name"], namespace=namespace, uid=meta["uid"], patch=kopf.Patch(),
                                        memo=memo, trainer_jobs=trainer_jobs, trainer_pods={}))
    return memo


@pytest.mark.parametrize("created_ago, recreated", [(None, True), (5.0, False), (handlers.JOB_EXPECTED_FOR + 1, True)])
def test_a_status_pass_waits_for_a_job_just_created_to_reach_the_index(
        kube: Any, monkeypatch: pytest.MonkeyPatch, created_ago: float | None, recreated: bool) -> None:
    """Controller expectations: a Job we made seconds ago and the index does not show yet is not
    made again (five requests per pass while the watch lags); one never seen for a minute is."""
    import time

    calls: list[str] = []
    monkeypatch.setattr(handlers, "ensure_children", lambda kube, body, owner, *_: calls.append(owner.name))
    body, namespace = created_finetunejob(kube, "new")
    uid = body["metadata"]["uid"]
    created = {} if created_ago is None else {uid: time.monotonic() - created_ago}
    memo = status_pass(kube, body, namespace, created, {})
    assert calls == (["new"] if recreated else [])
    assert (uid in memo.job_created) is (recreated or created_ago is not None)


def test_a_job_seen_in_the_index_ends_the_expectation(kube: Any) -> None:
    import time

    body, namespace = created_finetunejob(kube, "seen")
    uid = body["metadata"]["uid"]
    job = {"metadata": {"name": "seen-trainer", "uid": "job-uid", "ownerReferences": [{"uid": uid}]},
           "spec": {"suspend": False}, "status": {}}
    memo = status_pass(kube, body, namespace, {uid: time.monotonic()}, {(namespace, "seen"): [job]})
    assert memo.job_created == {}


def written(memo: kopf.Memo, uid: str) -> dict:
    """The status the last pass wrote (memo.written holds (when, status))."""
    return memo.written[uid][1]


def test_failed_create_events_are_read_on_a_doubling_schedule() -> None:
    """A pod-less Job's Events: first read 5 s after it is first seen so, then 10, 20 ... 300 s apart."""
    watch = handlers.EventsWatch.first_seen("job-uid", now=100.0)
    assert not watch.due(104.9) and watch.due(105.0) and watch.message is None
    reads = []
    for _ in range(8):
        reads.append(watch.next_at)
        watch = watch.after_read(watch.next_at, "refused")
    assert reads == [105.0, 115.0, 135.0, 175.0, 255.0, 415.0, 715.0, 1015.0]  # the wait stops doubling at 300 s
    assert watch.message == "refused"


def test_a_podless_job_lists_its_events_on_the_schedule_not_every_pass(kube: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 15 (1,000 pod-less Jobs listed Events 180 times a second): the first pass only notes
    the Job; a due pass reads its FailedCreate Event once and says why; the next pass reuses it."""
    from tuneloop.emulator.client import JsonApi, resource_path
    from tuneloop.operator.kube import Kube

    body, namespace = created_finetunejob(kube, "nopods")
    uid = body["metadata"]["uid"]
    job = {"metadata": {"name": "nopods-trainer", "uid": "job-uid-1", "ownerReferences": [{"uid": uid}]},
           "spec": {"suspend": False}, "status": {}}
    refused = 'pods "nopods-trainer-x" is forbidden: error looking up service account ml/robot: serviceaccount "robot" not found'
    JsonApi(kube.kubeconfig).create(resource_path("v1", "events", namespace), {
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": "nopods-trainer.1"}, "type": "Warning",
        "reason": "FailedCreate", "message": f"Error creating: {refused}",
        "involvedObject": {"kind": "Job", "name": "nopods-trainer", "namespace": namespace, "uid": "job-uid-1"}})
    reads: list[str] = []
    real = Kube.failed_create_events
    monkeypatch.setattr(Kube, "failed_create_events", lambda self, ns, job_uid: reads.append(job_uid) or real(self, ns, job_uid))
    posted: list[str] = []
    monkeypatch.setattr(kopf, "event", lambda body, *, type, reason, message: posted.append(reason))
    index = {(namespace, "nopods"): [job]}

    memo = status_pass(kube, body, namespace, {}, index)
    assert reads == [] and memo.failed_create[uid].job_uid == "job-uid-1"
    assert written(memo, uid).get("reason") != "FailedCreate"

    memo.failed_create[uid] = handlers.EventsWatch("job-uid-1", next_at=0.0)  # due now
    status_pass(kube, body, namespace, {}, index, memo)
    assert reads == ["job-uid-1"]
    assert written(memo, uid)["reason"] == "FailedCreate" and refused in written(memo, uid)["message"]
    assert "FailedCreate" in posted

    status_pass(kube, body, namespace, {}, index, memo)
    assert reads == ["job-uid-1"] and written(memo, uid)["reason"] == "FailedCreate"

    job["status"] = {"active": 1}  # its pods came: the watch is dropped
    status_pass(kube, body, namespace, {}, index, memo)
    assert uid not in memo.failed_create
