"""YAML and JSON text -> plain JSON values, bounded, as the Kubernetes API server would see them.

Every reader of user-written manifests and configs (`tuneloop validate`, `tuneloop-train
--config`) goes through here first, so nothing downstream meets a value JSON cannot carry
(issue 13: a fuzzer found 18 input shapes that crashed `validate` with a traceback):

* dates and timestamps stay the strings they were written as (`revision: 2024-09-19`), as
  kubectl's YAML-to-JSON conversion leaves them; impossible dates are strings too;
* sets become maps of nulls, non-string keys their string form (as sigs.k8s.io/yaml does);
* binary values, integers outside 64 bits, NaN and infinities and lone surrogates are refused
  with the path that holds them, because JSON (and so the API server) cannot carry them;
* input is bounded before it is expanded: file size, nesting depth, and the number of values
  after alias expansion (a few hundred bytes of nested aliases otherwise expand to billions),
  so no input hangs or exhausts memory. Recursive aliases are refused.

libyaml (when built in) parses; nesting is measured from its event stream first, because
libyaml's composer recurses in C and crashes the process on deep nesting.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from dataclasses import dataclass
from typing import Any

import yaml

# The API server refuses request bodies over 3 MiB; a manifest larger than that cannot be applied.
MAX_BYTES = 3 * 1024 * 1024
# Deeper than any Kubernetes object (a pod's affinity is ~12 levels); Python's JSON and YAML
# readers recurse per level.
MAX_DEPTH = 100
# Values after alias expansion, per document: far above any real manifest of MAX_BYTES,
# far below what a YAML bomb expands to.
MAX_VALUES = 1_000_000
INT64 = (-(2**63), 2**63 - 1)

_BASE = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class InputError(ValueError):
    """Text that is no plain JSON value: `where` (a field path or a line) and what is wrong."""

    def __init__(self, where: str, message: str):
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}" if where else message)


class _Loader(_BASE):  # type: ignore[misc, valid-type]
    """The safe loader, read as the API server reads YAML: timestamps kept as written, YAML 1.2 floats."""


_Loader.add_constructor("tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node))
# PyYAML follows YAML 1.1, where a float needs a dot: `2e-05` (how kustomize and Python's
# repr write a learning rate) would be a string, and `tuneloop validate` would refuse a
# manifest that kubectl applies. sigs.k8s.io/yaml reads it as a number (YAML 1.2 core schema).
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))


@dataclass
class Document:
    """One document of a file: its plain value, or why it has none."""

    index: int  # 1-based position in the file
    value: Any = None
    error: InputError | None = None
    raw: Any = None  # the value as loaded, before normalising (for skipping non-Tuneloop kinds)


def check_text_size(text: str | bytes, name: str) -> None:
    if len(text) > MAX_BYTES:
        raise InputError("", f"{name} is {len(text)} bytes; Tuneloop reads at most {MAX_BYTES} "
                             "(the Kubernetes API server refuses larger requests)")


def _check_nesting(text: str) -> None:
    """InputError when the YAML nests deeper than MAX_DEPTH (read from events, no recursion)."""
    depth = 0
    for event in yaml.parse(text, Loader=_BASE):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise InputError(f"line {event.start_mark.line + 1}", f"nests deeper than {MAX_DEPTH} levels")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def load_yaml_documents(text: str) -> list[Document]:
    """Every non-empty document of a YAML stream, each normalised or with its error.

    A stream that does not parse raises InputError (PyYAML cannot resume after a syntax
    error); a document that parses but holds no JSON value gets its own error.
    """
    try:
        _check_nesting(text)
        raws = [doc for doc in yaml.load_all(text, Loader=_Loader) if doc is not None]
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where, problem = f"line {mark.line + 1}" if mark else "", str(getattr(err, "problem", None) or err)
        if "nesting depth" in problem:  # PyYAML >= 6.0.4 stops deep nesting in its own scanner first
            raise InputError(where, f"nests deeper than {MAX_DEPTH} levels") from None
        raise InputError(where, f"not valid YAML: {problem}") from None
    except RecursionError:
        raise InputError("", f"nests deeper than {MAX_DEPTH} levels") from None
    documents = []
    for index, raw in enumerate(raws, start=1):
        try:
            documents.append(Document(index, to_plain(raw), raw=raw))
        except InputError as err:
            documents.append(Document(index, error=err, raw=raw))
    return documents


def load_json(text: str) -> Any:
    """One JSON value, normalised; InputError for NaN, deep nesting or huge numbers."""
    def refuse_constant(name: str) -> Any:
        raise InputError("", f"{name} is not a number JSON allows")

    try:
        return to_plain(json.loads(text, parse_constant=refuse_constant))
    except RecursionError:
        raise InputError("", f"nests deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as err:
        raise InputError(f"line {err.lineno}", f"not valid JSON: {err.msg}") from None
    except InputError:
        raise
    except ValueError as err:  # e.g. an integer of over 4,300 digits
        raise InputError("", f"not valid JSON: {err}") from None


def to_plain(value: Any) -> Any:
    """`value` as plain JSON types (dict with str keys, list, str, int, float, bool, None).

    InputError names the first offending path. Shared aliases are expanded and counted;
    a value that contains itself (a recursive alias) is refused.
    """
    budget = [MAX_VALUES]
    return _plain(value, "", 0, budget, set())


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _plain(value: Any, path: str, depth: int, budget: list[int], active: set[int]) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise InputError(path, f"expands to more than {MAX_VALUES} values (YAML aliases?); refusing to expand it")
    if depth > MAX_DEPTH:
        raise InputError(path, f"nests deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not INT64[0] <= value <= INT64[1]:
            raise InputError(path, "is an integer outside the 64-bit range the Kubernetes API accepts")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InputError(path, f"{value} is not a number JSON allows; give a finite number")
        return value
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(path, "holds invalid Unicode (a lone surrogate escape such as \\ud800)") from None
        return value
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()  # only from a loader other than ours; ours keeps the text
    if isinstance(value, (bytes, bytearray)):
        raise InputError(path, "is a binary value (!!binary); JSON has none: give a string")
    if isinstance(value, (dict, list, tuple, set)):
        if id(value) in active:
            raise InputError(path, "contains itself (a recursive YAML alias)")
        active.add(id(value))
        try:
            if isinstance(value, dict):
                out = {}
                for key, item in value.items():
                    name = _key_text(key, path)
                    out[name] = _plain(item, _join(path, name), depth + 1, budget, active)
                return out
            if isinstance(value, set):  # !!set: a map of nulls, as Go's YAML reader gives
                return {_key_text(k, path): None for k in value}
            return [_plain(item, f"{path}[{i}]", depth + 1, budget, active) for i, item in enumerate(value)]
        finally:
            active.discard(id(value))
    raise InputError(path, f"is a {type(value).__name__}, which JSON cannot hold")


def _key_text(key: Any, path: str) -> str:
    """A map key as JSON text: strings as they are, scalars as sigs.k8s.io/yaml writes them."""
    if isinstance(key, str):
        _plain(key, path, 0, [1], set())
        return key
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, (int, float)):
        return str(_plain(key, path, 0, [1], set()))
    if isinstance(key, (datetime.date, datetime.datetime)):
        return key.isoformat()
    raise InputError(path, f"has a {type(key).__name__} as a key; keys must be strings")

