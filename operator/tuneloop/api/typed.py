"""Frozen dataclasses <-> Kubernetes-style (camelCase) dicts, with field-path errors.

Hand-written rather than pydantic because the rules are few (scalars, enums, lists, maps,
nested dataclasses), the trainer image must stay light, and every error must carry the
exact `spec.a.b[2].c` path that `tuneloop validate` and the operator print.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

T = TypeVar("T")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest: where (`spec.training.lora.r`) and what to do."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class SpecError(ValueError):
    """Raised with every problem found, so a user fixes them all in one round."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


def camel(name: str) -> str:
    """`max_seq_length` -> `maxSeqLength` (the Kubernetes API convention)."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def key_of(f: dataclasses.Field) -> str:
    return f.metadata.get("key") or camel(f.name)


def describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) if not isinstance(a, str) else a for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in get_args(tp) if a is not type(None))
    if origin is list:
        return f"a list of {describe(get_args(tp)[0])}"
    if origin is dict:
        return "a map"
    if dataclasses.is_dataclass(tp):
        return "an object"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _convert(value: Any, tp: Any, path: str, problems: list[Problem]) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], path, problems) if len(args) == 1 else value
    if value is None:
        problems.append(Problem(path, f"must be {describe(tp)}, not null"))
        return None
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            problems.append(Problem(path, f"{value!r} is not allowed; use one of: {describe(tp)}"))
        return value
    if origin is list:
        if not isinstance(value, list):
            problems.append(Problem(path, f"must be {describe(tp)}, got {type(value).__name__}"))
            return ()
        (item_tp,) = get_args(tp)
        return tuple(_convert(v, item_tp, f"{path}[{i}]", problems) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(Problem(path, f"must be a map, got {type(value).__name__}"))
            return {}
        key_tp, val_tp = get_args(tp)
        return {k: _convert(v, val_tp, f"{path}.{k}", problems) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, problems)
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(Problem(path, f"must be a number, got {value!r}"))
            return value
        # NaN compares false with every bound, so it would pass every check (issue 13).
        if isinstance(value, int) and abs(value) > 2**63 or isinstance(value, float) and not math.isfinite(value):
            problems.append(Problem(path, f"must be a finite number, got {value!r}"))
            return 0.0
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(Problem(path, f"must be an integer, got {value!r}"))
        return value
    if tp in (str, bool) and not isinstance(value, tp):
        problems.append(Problem(path, f"must be {describe(tp)}, got {value!r}"))
    return value


def _build(cls: type[T], data: Any, path: str, problems: list[Problem]) -> T:
    if not isinstance(data, dict):
        problems.append(Problem(path, f"must be an object, got {type(data).__name__}"))
        data = {}
    hints = _type_hints(cls)
    fields = {key_of(f): f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            known = ", ".join(sorted(fields))
            problems.append(Problem(f"{path}.{key}", f"unknown field; known fields here: {known}"))
    kwargs = {}
    for key, f in fields.items():
        if key in data:
            kwargs[f.name] = _convert(data[key], hints[f.name], f"{path}.{key}", problems)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append(Problem(f"{path}.{key}", "is required"))
            kwargs[f.name] = None
    return cls(**kwargs)


@functools.lru_cache(maxsize=None)
def _type_hints(cls: type) -> dict[str, Any]:
    # Spec classes never change; resolving their string annotations each parse was the
    # largest cost of checking a search's trial specs (issue 14).
    return typing.get_type_hints(cls)


def from_dict(cls: type[T], data: Any, path: str = "spec") -> T:
    """Parse `data` into `cls`, raising SpecError listing every problem with its path."""
    problems: list[Problem] = []
    obj = _build(cls, data, path, problems)
    if problems:
        raise SpecError(problems)
    return obj


def to_dict(obj: Any) -> Any:
    """The inverse of from_dict: camelCase keys, None fields left out."""
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if value is not None:
                out[key_of(f)] = to_dict(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def field_keys(cls: type) -> dict[str, Any]:
    """The tree of camelCase keys a dataclass accepts: used to check it against the CRD."""
    hints = _type_hints(cls)
    tree: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if get_origin(tp) in (Union, types.UnionType):
            tp = next(a for a in get_args(tp) if a is not type(None))
        if get_origin(tp) is list and dataclasses.is_dataclass(get_args(tp)[0]):
            tp = get_args(tp)[0]
        tree[key_of(f)] = field_keys(tp) if dataclasses.is_dataclass(tp) else None
    return tree


def help_text(cls: type) -> dict[str, str]:
    """`a.b.c` -> help string, for `tuneloop-train --help`."""
    hints = _type_hints(cls)
    out: dict[str, str] = {}
    for f in dataclasses.fields(cls):
        key = key_of(f)
        tp = hints[f.name]
        if get_origin(tp) in (Union, types.UnionType):
            tp = next(a for a in get_args(tp) if a is not type(None))
        if dataclasses.is_dataclass(tp):
            out.update({f"{key}.{k}": v for k, v in help_text(tp).items()})
        else:
            out[key] = f.metadata.get("help", "")
    return out
