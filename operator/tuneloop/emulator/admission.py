"""Admission the API server applies to a new pod, as its built-in plugins do.

A real Job's pods are refused here, not started: the Job controller then reports the refusal
as a `FailedCreate` Event on the Job (jobcontroller.py), and nothing else shows it (issue 9).

- ServiceAccount: `spec.serviceAccountName` (`default` when unset) must exist in the
  namespace; the ServiceAccount controller makes `default` in every new namespace (here
  within the namespace's create, a real one a moment later).
- Priority: `spec.priorityClassName` must name a PriorityClass (the two `system-*` classes
  are built in), and the pod gets its `priority`.

Not here: Pod Security admission, ResourceQuota, LimitRange, webhooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import kmock

from tuneloop.emulator import errors

if TYPE_CHECKING:
    from tuneloop.emulator.api import ApiServer

PODS = kmock.resource("", "v1", "pods")
SERVICE_ACCOUNTS = kmock.resource("", "v1", "serviceaccounts")
PRIORITY_CLASSES = kmock.resource("scheduling.k8s.io", "v1", "priorityclasses")
# kube-apiserver's own classes (pkg/apis/scheduling: SystemPriorityClasses).
SYSTEM_PRIORITY_CLASSES = {"system-cluster-critical": 2000000000, "system-node-critical": 2000001000}


def default_service_account(namespace: str) -> dict[str, Any]:
    """What the ServiceAccount controller makes in every namespace."""
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": namespace}}


def admit_pod(api: ApiServer, namespace: str, pod: dict[str, Any], name: str) -> dict[str, Any]:
    """The pod as admitted, or `403 Forbidden` with the real plugins' words (`name` as the
    request gave it: a Job controller's `generateName`, `pods "train-0-" is forbidden`)."""
    spec = pod.get("spec") or {}
    account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    if api.store.get((SERVICE_ACCOUNTS, namespace, account)) is None:
        raise errors.forbidden(f'pods "{name}" is forbidden: error looking up service account '
                               f'{namespace}/{account}: serviceaccount "{account}" not found')
    spec = {**spec, "serviceAccountName": account}
    if class_name := spec.get("priorityClassName"):
        if class_name in SYSTEM_PRIORITY_CLASSES:
            value = SYSTEM_PRIORITY_CLASSES[class_name]
        elif (found := api.store.get((PRIORITY_CLASSES, None, class_name))) is not None:
            value = int(found.get("value") or 0)
        else:
            raise errors.forbidden(f'pods "{name}" is forbidden: no PriorityClass with name {class_name} was found')
        spec["priority"] = value
    return {**pod, "spec": spec}
