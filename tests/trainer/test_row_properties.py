"""Property-based tests (hypothesis) over dataset bytes and rows (issue 13): the data path
answers every input with rows or a PermanentError (exit 2), never another exception."""

from __future__ import annotations

import gzip
import json
import os
from typing import Any

from hypothesis import HealthCheck, given, settings, strategies as st

from tuneloop.api.finetunejob import CleaningSpec, FieldMap
from tuneloop.trainer import data
from tuneloop.trainer.config import PermanentError

EXAMPLES = int(os.environ.get("TUNELOOP_FUZZ_EXAMPLES", "40"))
BOUNDED = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                      max_leaves=15)
rows = st.lists(st.dictionaries(st.sampled_from(["text", "label", "prompt", "response", "messages", "x"]), values, max_size=5),
                max_size=20)


@BOUNDED
@given(st.binary(max_size=2000), st.sampled_from(["jsonl", "csv", "parquet"]), st.booleans())
def test_any_bytes_are_rows_or_a_permanent_error(raw: bytes, fmt: str, gz: bool) -> None:
    try:
        out = data.read_rows(raw, fmt, "f.gz" if gz else f"f.{fmt}")
    except PermanentError:
        return
    assert all(isinstance(r, dict) for r in out)


@BOUNDED
@given(rows)
def test_jsonl_round_trips_any_object_rows(given_rows: list[dict[str, Any]]) -> None:
    raw = "".join(json.dumps(r) + "\n" for r in given_rows).encode()
    assert data.read_rows(raw, "jsonl", "f.jsonl") == given_rows
    assert data.read_rows(gzip.compress(raw), "jsonl", "f.jsonl.gz") == given_rows


@BOUNDED
@given(rows, st.sampled_from(["causal-lm-sft", "sequence-classification", "regression"]))
def test_cleaning_any_rows_gives_rows_or_a_permanent_error(given_rows: list[dict[str, Any]], task: str) -> None:
    fields = FieldMap()
    try:
        data.check_columns(given_rows, task, fields, "f.jsonl")
        kept, report = data.clean_rows(given_rows, task, fields, CleaningSpec())
    except PermanentError:
        return
    assert report.rows_out == len(kept) <= len(given_rows)
