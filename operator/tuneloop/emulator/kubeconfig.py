"""A kubeconfig that points clients (kubernetes, kopf, kubectl) at an emulator."""

from __future__ import annotations

import os
import pathlib
import tempfile

import yaml

CONTEXT = "tuneloop-emulator"


def write_kubeconfig(path: str | os.PathLike[str], server_url: str, namespace: str = "default") -> pathlib.Path:
    """Write atomically: other processes (an operator under test) may read it any time."""
    path = pathlib.Path(path)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": {"server": server_url}}],
        # The emulator checks no credentials; a token keeps clients that insist on one happy.
        "users": [{"name": CONTEXT, "user": {"token": "emulator"}}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": namespace}}],
        "current-context": CONTEXT,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
        yaml.safe_dump(config, f, sort_keys=False)
    os.replace(f.name, path)
    return path
