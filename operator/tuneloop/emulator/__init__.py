"""A Kubernetes API server in memory, for tests and the local demo.

Built on kmock's `KubernetesEmulator`: real HTTP, kube-apiserver's object semantics
(resourceVersion, generation, status subresource, finalizers, owner cascades, watches,
selectors, patches, CRD schemas), indexed to stay fast with thousands of objects.

- `Emulator`: the kmock handler; serve it with `EmulatorServer` inside an event loop.
- `BackgroundEmulator`: both in a background thread, with a kubeconfig written for clients.
- `load_crds`, `write_kubeconfig`: helpers; `python -m tuneloop.emulator --help` runs it.
- `GET /metrics`: requests served, as `apiserver_request_total{client,verb,resource,subresource}`
  (`client` is the User-Agent's product), so a benchmark counts what an operator asked for.
- `kubelet.Kubelet` (with `jobcontroller.py`): the Job controller and kubelet of one node.
- `Fault`, `emulator.faults` (faults.py): injected API errors for reliability tests (409, 429
  with Retry-After, 500, dropped connections, watch streams that end or go silent).

What it refuses and does as a real cluster would (issue 9): built-in objects against the
official OpenAPI schemas and the Job rules in builtins.py, DNS-1035 Service names, no PUT
of a custom resource without resourceVersion; Job defaults; the ServiceAccount and
Priority admission plugins for pods (admission.py: 403, which the Job controller reports as
a `FailedCreate` Event on the Job); garbage collection and namespace emptying after the
DELETE has returned (`gc_delay`; creating in a Terminating namespace is refused); graceful
pod deletion; pod DNS names answered through a headless Service's selection (kubelet.py).

Remaining differences from a real cluster (each a way a test can pass here and fail there):
- API: strategic merge patch replaces lists whole; server-side apply is a merge patch (no
  managedFields, no conflicts); of the admission plugins only ServiceAccount (existence, no
  token mount) and Priority; none of ResourceQuota, LimitRange, Pod Security,
  OwnerReferencesPermissionEnforcement, nor webhooks (Kueue, IRSA); `dryRun` is refused;
  generation is set on every kind (ConfigMaps too).
- Custom resources are checked by Tuneloop's own schema code on cel-python (no cost budget,
  no Kubernetes CEL libraries, no ratcheting, no list-type=map uniqueness, no `format`).
- Deletion: the orphan policy strips references at once (no `orphan` finalizer); a
  namespace is emptied in one sweep (real: by resource type, with `NamespaceDeletion*`
  conditions); foreground deletion honours blockOwnerDeletion only.
- Watches expire after `watch_history` changes (real: etcd compaction, sooner); lists ignore
  `resourceVersion`/`resourceVersionMatch`; continue tokens never expire; field selectors
  are a fixed table; discovery is a static K3s snapshot plus the CRDs.
- Events are stored as sent (no TTL, no server-side aggregation; the local Job controller
  counts its own repeats on one Event, as client-go's recorder does).
- The local kubelet and Job controller: see their module docstrings.
"""

from tuneloop.emulator.crds import load_crds
from tuneloop.emulator.emulator import Emulator
from tuneloop.emulator.faults import Fault, FaultList
from tuneloop.emulator.kubeconfig import write_kubeconfig
from tuneloop.emulator.running import BackgroundEmulator
from tuneloop.emulator.server import EmulatorServer

__all__ = ["BackgroundEmulator", "Emulator", "EmulatorServer", "Fault", "FaultList", "load_crds", "write_kubeconfig"]
