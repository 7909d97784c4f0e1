"""CustomResourceDefinitions: reading them from YAML, and what they declare.

`crd_resources` turns a CRD object into the discovery entries kmock serves
(`kmock.ResourceInfo`: kind, scope, verbs, subresources) plus the per-version
OpenAPI schemas the emulator validates custom objects against.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Iterable, Mapping
from typing import Any

import kmock
import yaml

CRD_RESOURCE = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")

CrdSource = str | pathlib.Path | Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class CustomResource:
    resource: kmock.resource
    info: kmock.ResourceInfo
    schema: dict[str, Any] | None  # the version's openAPIV3Schema, if any
    columns: tuple[dict[str, Any], ...] = ()  # the version's additionalPrinterColumns (kubectl's Table)


def crd_problems(crd: Mapping[str, Any]) -> list[str]:
    """What makes a CRD unacceptable (the server rejects it with 422 Invalid)."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    problems = [f"spec.{path}: Required value" for path, value in [
        ("group", spec.get("group")), ("names.plural", names.get("plural")),
        ("names.kind", names.get("kind")), ("versions", spec.get("versions")),
    ] if not value]
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        problems.append(f"spec.scope: Unsupported value: {spec.get('scope')!r}: supported values: \"Cluster\", \"Namespaced\"")
    expected_name = f"{names.get('plural')}.{spec.get('group')}"
    if not problems and (crd.get("metadata") or {}).get("name") != expected_name:
        problems.append(f"metadata.name: Invalid value: must be spec.names.plural+\".\"+spec.group: {expected_name!r}")
    return problems


def crd_resources(crd: Mapping[str, Any]) -> list[CustomResource]:
    """The served versions of a (valid) CRD, as discovery entries and schemas."""
    spec = crd["spec"]
    names = spec["names"]
    resources = []
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        # v1 CRDs declare subresources per version; the top-level field is the v1beta1 way.
        subresources = version.get("subresources") or spec.get("subresources") or {}
        schema = (version.get("schema") or spec.get("validation") or {}).get("openAPIV3Schema")
        info = kmock.ResourceInfo(
            kind=names["kind"],
            singular=names.get("singular") or names["kind"].lower(),
            namespaced=spec["scope"] == "Namespaced",
            verbs=set(ALL_VERBS),
            shortnames=set(names.get("shortNames") or []),
            categories=set(names.get("categories") or []),
            subresources={name for name in ("status", "scale") if name in subresources},
        )
        columns = tuple(version.get("additionalPrinterColumns") or spec.get("additionalPrinterColumns") or ())
        resources.append(CustomResource(kmock.resource(spec["group"], version["name"], names["plural"]), info, schema,
                                        columns))
    return resources


def established_status(crd: Mapping[str, Any], now: str) -> dict[str, Any]:
    """The status the apiextensions controllers give an accepted CRD (kubectl waits for it)."""
    spec = crd["spec"]
    conditions = [
        {"type": kind, "status": "True", "reason": reason, "message": message, "lastTransitionTime": now}
        for kind, reason, message in [
            ("NamesAccepted", "NoConflicts", "no conflicts found"),
            ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ]
    ]
    storage = [v["name"] for v in spec["versions"] if v.get("storage")] or [spec["versions"][0]["name"]]
    return {"conditions": conditions, "acceptedNames": dict(spec["names"]), "storedVersions": storage}


def load_crds(*sources: CrdSource) -> list[dict[str, Any]]:
    """CRD objects from dicts, YAML files, or directories of `*.yaml`/`*.yml` (multi-document ok).

    Documents that are not CustomResourceDefinitions are skipped, so a directory of mixed
    manifests can be given as is.
    """
    crds: list[dict[str, Any]] = []
    for source in sources:
        for document in _documents(source):
            if isinstance(document, Mapping) and document.get("kind") == "CustomResourceDefinition":
                crds.append(dict(document))
    return crds


def _documents(source: CrdSource) -> Iterable[Any]:
    if isinstance(source, Mapping):
        return [source]
    path = pathlib.Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
        return [doc for file in files for doc in yaml.safe_load_all(file.read_text(encoding="utf-8"))]
    return list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
