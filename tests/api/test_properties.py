"""Property-based tests (hypothesis) over manifests and specs (issue 13).

Whatever the document, `tuneloop validate` and the operator's parse-and-build never raise:
they answer with problems. The suite runs a bounded number of examples; the longer fuzz run
is a command (docs/reliability.md):

    TUNELOOP_FUZZ_EXAMPLES=5000 python3 -m pytest tests/api/test_properties.py tests/trainer/test_row_properties.py -q -p no:cacheprovider
"""

from __future__ import annotations

import copy
import io
import json
import os
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from support.manifests import finetunejob
from tuneloop.api.cli import main
from tuneloop.api.documents import InputError, load_yaml_documents
from tuneloop.api.validate import parse_spec, validate_manifest
from tuneloop.operator.builders import Owner, build_children, check_names

EXAMPLES = int(os.environ.get("TUNELOOP_FUZZ_EXAMPLES", "40"))
BOUNDED = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1) \
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                           max_leaves=20)


def spec_paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    paths = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            paths += spec_paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            paths += spec_paths(v, prefix + (i,))
    return paths


BASE = finetunejob(env=[{"name": "A", "value": "1"}], resources={"nodes": 2, "nodeSelector": {"a": "b"}},
                   storage={"endpoint": "http://minio:9000", "credentialsSecret": {"name": "s3"}})
PATHS = spec_paths(BASE)


def mutate(path: tuple, value: Any) -> dict:
    doc = copy.deepcopy(BASE)
    if not path:
        return value if isinstance(value, dict) else doc
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


def parse_and_build(doc: dict) -> None:
    """What the operator does with an object the API server accepted."""
    spec, problems = parse_spec("FineTuneJob", doc.get("spec"), "ml")
    if spec is not None and not problems and not check_names("demo", spec):
        for child in build_children(Owner("demo", "ml", "uid-1"), spec):
            json.dumps(child)  # every child is plain JSON the API server could take


@BOUNDED
@given(st.sampled_from(PATHS), json_values)
def test_any_value_anywhere_in_a_manifest_gets_an_answer_not_an_exception(path: tuple, value: Any) -> None:
    doc = mutate(path, value)
    result = validate_manifest(doc)
    assert all(str(p.path).startswith(("spec", "metadata", "kind", "apiVersion", "document")) for p in result.problems)
    if isinstance(doc.get("spec"), dict):
        parse_and_build(doc)


@BOUNDED
@given(st.dictionaries(st.text(max_size=20), json_values, max_size=8))
def test_any_spec_mapping_parses_or_lists_problems(spec: dict) -> None:
    parsed, problems = parse_spec("FineTuneJob", spec, "ml")
    assert (parsed is None) == bool(problems) or problems


@BOUNDED
@given(st.text(max_size=400))
def test_any_text_is_read_or_refused_with_input_error(text: str) -> None:
    try:
        load_yaml_documents(text)
    except InputError:
        pass


@BOUNDED
@given(st.sampled_from(PATHS), json_values)
def test_the_cli_always_exits_0_1_or_2(path: tuple, value: Any) -> None:
    text = yaml.safe_dump(mutate(path, value), allow_unicode=True)
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", write_through=True)
    assert main(["validate", "-f", "-"], stdin=io.StringIO(text), out=out) in (0, 1, 2)
