"""Server-side printing: `application/json;as=Table;g=meta.k8s.io;v=v1` for custom resources.

kubectl asks for a Table on every `get`; a server that answers with plain JSON gets the
fallback columns NAME and AGE only. kube-apiserver builds the Table of a custom resource from
its CRD's `additionalPrinterColumns` (apiextensions-apiserver `tableconvertor`): a `Name`
column, then each printer column's JSONPath value; `date` cells become an age such as `5m`
(`duration.HumanDuration`); columns with `priority > 0` are shown by `-o wide` only (kubectl
filters them). Pure functions: the emulator passes the clock in.

Only what CRD printer columns use: simple JSONPaths (`.status.progress.percent`); a path
with filters or wildcards yields no value, as a missing field does.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable, Mapping

NAME_COLUMN = {"name": "Name", "type": "string", "format": "name", "priority": 0,
               "description": "Name must be unique within a namespace."}


def accepts_table(accept: str | None) -> bool:
    """kubectl's `Accept: application/json;as=Table;v=v1;g=meta.k8s.io,...,application/json`."""
    for part in (accept or "").split(","):
        params = {k.strip(): v.strip() for k, _, v in (p.partition("=") for p in part.split(";")[1:])}
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io" and params.get("v") in ("v1", "v1beta1"):
            return True
    return False


def column_definitions(columns: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [NAME_COLUMN] + [{"name": c["name"], "type": c.get("type", "string"), "format": c.get("format", ""),
                             "description": c.get("description", ""), "priority": int(c.get("priority", 0))}
                            for c in columns]


def table(objects: Iterable[Mapping[str, Any]], columns: list[Mapping[str, Any]], now: datetime,
          resource_version: str | None = None, headers: bool = True) -> dict[str, Any]:
    """A meta.k8s.io/v1 Table of `objects`; `headers=False` for watch events after the first."""
    rows = [row(obj, columns, now) for obj in objects]
    out: dict[str, Any] = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {}, "rows": rows}
    if resource_version:
        out["metadata"]["resourceVersion"] = resource_version
    out["columnDefinitions"] = column_definitions(columns) if headers else []
    return out


def row(obj: Mapping[str, Any], columns: list[Mapping[str, Any]], now: datetime) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    cells = [meta.get("name", "")] + [cell(json_path(obj, c.get("jsonPath", "")), c.get("type", "string"), now)
                                      for c in columns]
    # includeObject=Metadata (kubectl's default): enough for namespaces, names and -L labels.
    return {"cells": cells, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                       "metadata": dict(meta)}}


def json_path(obj: Any, path: str) -> Any:
    if not path.startswith(".") or any(ch in path for ch in "[]*?@"):
        return None
    for part in path.strip(".").split("."):
        if not isinstance(obj, Mapping) or part not in obj:
            return None
        obj = obj[part]
    return obj


def cell(value: Any, type_: str, now: datetime) -> Any:
    if value is None:
        return None
    if type_ == "date" and isinstance(value, str):
        try:
            then = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
        return human_duration((now - then).total_seconds())
    if type_ == "integer" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if type_ == "number" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if type_ == "boolean":
        return bool(value)
    if isinstance(value, (dict, list)):
        import json

        return json.dumps(value, separators=(",", ":"))
    return value if isinstance(value, str) else str(value)


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration: 45s, 3m20s, 17m, 5h10m, 30h, 3d4h, 12d, 3y."""
    s = int(max(seconds, 0))
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 192:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        years = hours // (24 * 365)
        days = (hours // 24) % 365
        return f"{years}y{days}d" if days else f"{years}y"
    return f"{hours // (24 * 365)}y"
