"""A Kubernetes API server in memory, for tests and the local demo.

Built on kmock's `KubernetesEmulator`: real HTTP, kube-apiserver's object semantics
(resourceVersion, generation, status subresource, finalizers, owner cascades, watches,
selectors, patches, CRD schemas), indexed to stay fast with thousands of objects.

- `Emulator`: the kmock handler; serve it with `EmulatorServer` inside an event loop.
- `BackgroundEmulator`: both in a background thread, with a kubeconfig written for clients.
- `load_crds`, `write_kubeconfig`: helpers; `python -m tuneloop.emulator --help` runs it.
"""

from tuneloop.emulator.crds import load_crds
from tuneloop.emulator.emulator import Emulator
from tuneloop.emulator.kubeconfig import write_kubeconfig
from tuneloop.emulator.running import BackgroundEmulator
from tuneloop.emulator.server import EmulatorServer

__all__ = ["BackgroundEmulator", "Emulator", "EmulatorServer", "load_crds", "write_kubeconfig"]
