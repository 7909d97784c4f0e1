"""Where the CRDs live and how to read them.

`crds/*.yaml` at the top of the repository are the single source of truth. The wheel carries a
copy at `tuneloop/api/crds/` (pyproject's force-include), so `tuneloop validate` works when
installed from a wheel as well as from a checkout.

MaintenancePolicy's `jobTemplate.spec` is the FineTuneJob spec schema without its transition
rules (a template may change; a running job may not). `python -m tuneloop.api.crds sync`
regenerates that block after the FineTuneJob CRD changes; a test fails until it is run.
"""

from __future__ import annotations

import copy
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

GROUP = "tuneloop.dev"
VERSION = "v1alpha1"
KINDS = {"FineTuneJob": "finetunejobs.yaml", "MaintenancePolicy": "maintenancepolicies.yaml"}


def crd_dir() -> Path:
    packaged = Path(__file__).parent / "crds"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "crds"  # operator/tuneloop/api -> repo root


@lru_cache(maxsize=None)
def load_crd(kind: str) -> dict[str, Any]:
    return yaml.safe_load((crd_dir() / KINDS[kind]).read_text())


def openapi_schema(kind: str) -> dict[str, Any]:
    (version,) = [v for v in load_crd(kind)["spec"]["versions"] if v["name"] == VERSION]
    return version["schema"]["openAPIV3Schema"]


def without_transition_rules(schema: Any) -> Any:
    """A copy of `schema` with every CEL rule that compares against `oldSelf` removed."""
    if isinstance(schema, list):
        return [without_transition_rules(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "x-kubernetes-validations":
            kept = [r for r in value if "oldSelf" not in r["rule"]]
            if kept:
                out[key] = copy.deepcopy(kept)
        else:
            out[key] = without_transition_rules(value)
    return out


def job_template_spec_schema() -> dict[str, Any]:
    return without_transition_rules(openapi_schema("FineTuneJob")["properties"]["spec"])


def sync_policy_crd() -> bool:
    """Rewrite the jobTemplate.spec block of maintenancepolicies.yaml; True if it changed."""
    path = crd_dir() / KINDS["MaintenancePolicy"]
    text = path.read_text()
    start_marker = "                    spec:\n"
    start = text.index(start_marker, text.index("                jobTemplate:\n")) + len(start_marker)
    end = text.index("                evaluation:\n", start)
    body = yaml.safe_dump(job_template_spec_schema(), sort_keys=False, width=1000)
    block = "".join(" " * 22 + line + "\n" if line else "\n" for line in body.splitlines())
    new = text[:start] + block + text[end:]
    if new != text:
        path.write_text(new)
        load_crd.cache_clear()
    return new != text


if __name__ == "__main__":
    if sys.argv[1:] != ["sync"]:
        sys.exit("usage: python -m tuneloop.api.crds sync")
    print("updated" if sync_policy_crd() else "already in sync")
