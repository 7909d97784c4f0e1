"""`tuneloop validate` on the input shapes a fuzzer crashed it with (issue 13): never a traceback.

Each row is one shape from the security review. The output goes to a strict UTF-8 stream, as
a CI pipe would be, so a lone surrogate echoed back would fail here too.
"""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from tuneloop.api.cli import main
from tuneloop.api.documents import MAX_BYTES, MAX_VALUES, InputError, load_json, load_yaml_documents, to_plain

TEMPLATE = """\
apiVersion: tuneloop.dev/v1alpha1
kind: {kind}
metadata:
  name: {name}
  namespace: {namespace}
spec:
  task: sequence-classification
  model:
    source: s3://models/base/minilm/
    revision: {revision}
  dataset:
    train: s3://data/tickets/train.csv
  output:
    uri: s3://models/out/demo/
  training:
    epochs: {epochs}
    learningRate: {lr}
{extra}"""


def manifest(**over: str) -> str:
    values = {"kind": "FineTuneJob", "name": "demo", "namespace": "ml", "revision": '"main"', "epochs": "1",
              "lr": "2.0e-5", "extra": ""}
    values.update(over)
    return TEMPLATE.format(**values)


# 9 levels of 9 aliases each: about 400 bytes that expand to 9**9 values.
BOMB = "  bomb:\n    b0: &b0 [0, 0, 0, 0, 0, 0, 0, 0, 0]\n" + "".join(
    f"    b{i}: &b{i} [" + ", ".join([f"*b{i - 1}"] * 9) + "]\n" for i in range(1, 9))
NESTED = "[" * 1200 + "]" * 1200

CASES = [
    # (id, text, exit code, text expected in the output)
    ("unquoted-date", manifest(revision="2024-09-19"), 0, "1 valid"),
    ("timestamp", manifest(revision="2001-12-14t21:59:43.10-05:00"), 0, "1 valid"),
    ("impossible-date", manifest(revision="2024-02-30"), 0, "1 valid"),
    ("binary", manifest(revision="!!binary aGVsbG8="), 1, "spec.model.revision: is a binary value"),
    ("set", manifest(revision="!!set {a, b}"), 1, "spec.model.revision: must be a string"),
    ("int-beyond-64-bits", manifest(epochs="123456789012345678901234567890"), 1, "spec.training.epochs: is an integer outside"),
    ("nan", manifest(lr=".nan"), 1, "spec.training.learningRate: nan is not a number"),
    ("inf", manifest(lr="-.inf"), 1, "spec.training.learningRate: -inf is not a number"),
    ("deep-nesting", manifest(extra=f"  deep: {NESTED}\n"), 2, "nests deeper than"),
    ("recursive-alias", manifest(extra="  loop: &a [1, *a]\n"), 1, "spec.loop[1]: contains itself"),
    ("alias-bomb", manifest(extra=BOMB), 1, f"more than {MAX_VALUES} values"),
    ("kind-list", manifest(kind="[FineTuneJob]"), 1, "kind: ['FineTuneJob'] is not a Tuneloop kind"),
    ("kind-map", manifest(kind="{a: b}"), 1, "is not a Tuneloop kind"),
    ("name-list", manifest(name="[demo]"), 1, "metadata.name: is required"),
    ("name-map", manifest(name="{a: b}"), 1, "metadata.name: is required"),
    ("namespace-list", manifest(namespace="[ml]"), 1, "metadata.namespace"),
    ("namespace-map", manifest(namespace="{a: b}"), 1, "metadata.namespace"),
    ("non-string-keys", manifest(extra="  1: one\n  null: two\n  true: three\n  2.5: four\n"), 1, "spec.1: unknown field"),
    # libyaml refuses the escape (exit 2); PyYAML's pure-Python reader loads it and to_plain refuses it.
    ("lone-surrogate-value", manifest(revision='"\\ud800"'), (1, 2), "nvalid Unicode"),
    ("lone-surrogate-key", manifest(extra='  "\\udc00x": 1\n'), (1, 2), "nvalid Unicode"),
    ("too-large", manifest(extra="  big: " + "x" * (MAX_BYTES + 10) + "\n"), 2, f"larger than {MAX_BYTES} bytes"),
]


def run(text: str) -> tuple[int, str]:
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", write_through=True)
    code = main(["validate", "-f", "-"], stdin=io.StringIO(text), out=out)
    return code, raw.getvalue().decode("utf-8")


@pytest.mark.parametrize("text, code, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_shape_gets_a_line_and_an_exit_code(text: str, code: int | tuple[int, ...], expected: str) -> None:
    got, out = run(text)
    assert expected in out, out
    assert got in (code if isinstance(code, tuple) else (code,)), out


def test_one_bad_document_does_not_stop_the_others() -> None:
    text = "---\n".join([manifest(lr=".nan"), manifest(extra="  loop: &a [*a]\n"), manifest(name="other")])
    code, out = run(text)
    assert code == 1
    assert "-:1: spec.training.learningRate" in out and "-:2: spec.loop" in out
    assert "3 Tuneloop manifest(s) checked: 1 valid, 2 invalid" in out


def test_non_tuneloop_document_with_odd_values_is_skipped() -> None:
    other = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata:\n  key: !!binary aGVsbG8=\n"
    code, out = run(other + "---\n" + manifest())
    assert code == 0, out
    assert "-:1: skipped" in out


def test_bad_utf8_file_and_binary_input_exit_2(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"kind: \xff\xfe\n")
    out = io.StringIO()
    assert main(["validate", "-f", str(path)], out=out) == 2
    assert "cannot read" in out.getvalue()


@pytest.mark.parametrize("case", ["alias-bomb", "deep-nesting", "lone-surrogate-key", "recursive-alias"])
def test_real_cli_never_prints_a_traceback(case: str) -> None:
    text, code = next((c[1], c[2]) for c in CASES if c[0] == case)
    proc = subprocess.run([sys.executable, "-m", "tuneloop.api.cli", "validate", "-f", "-"], input=text.encode(),
                          capture_output=True, timeout=60, env={"PYTHONIOENCODING": "utf-8:strict", **__import__("os").environ})
    assert b"Traceback" not in proc.stderr, proc.stderr.decode(errors="replace")
    assert proc.returncode in (code if isinstance(code, tuple) else (code,)), proc.stdout.decode(errors="replace")


@pytest.mark.parametrize("text, message", [
    ('{"a": NaN}', "NaN is not a number"),
    ('{"a": Infinity}', "Infinity is not a number"),
    ("[" * 5000 + "]" * 5000, "nests deeper"),
    ('{"a": ' + "9" * 5000 + "}", "not valid JSON"),
    ('{"a": 99999999999999999999}', "64-bit"),
    ('{"\\ud800": 1}', "invalid Unicode"),
])
def test_json_loader_refuses_what_the_api_server_cannot_carry(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        load_json(text)


def test_lone_surrogates_are_refused_by_to_plain() -> None:
    with pytest.raises(InputError, match="a.b: holds invalid Unicode"):
        to_plain({"a": {"b": "\ud800"}})
    with pytest.raises(InputError, match="invalid Unicode"):
        to_plain({"\udc00": 1})


def test_exponent_floats_without_a_dot_are_numbers_as_the_api_server_reads_them() -> None:
    # YAML 1.1 (PyYAML) reads `2e-05` as a string; kustomize and Python write learning rates so.
    (doc,) = load_yaml_documents("a: 2e-05\nb: -1E+3\nc: '2e-05'\nd: 1_0e2\n")
    assert doc.value == {"a": 2e-05, "b": -1000.0, "c": "2e-05", "d": "1_0e2"}


def test_yaml_timestamps_stay_the_strings_written() -> None:
    (doc,) = load_yaml_documents("a: 2024-09-19\nb: 2001-12-14 21:59:43.10 -5\nc: !!set {x}\n")
    assert doc.value == {"a": "2024-09-19", "b": "2001-12-14 21:59:43.10 -5", "c": {"x": None}}


@pytest.mark.parametrize("extra, message", [
    ("  resources:\n    tolerations:\n" + "      - {key: k, operator: Exists}\n" * 33, "spec.resources.tolerations"),
    ("  resources:\n    nodeSelector:\n" + "".join(f"      k{i}: v\n" for i in range(33)), "spec.resources.nodeSelector"),
    ("  env:\n" + "".join(f"    - {{name: V{i}, value: '{'x' * 2000}'}}\n" for i in range(40)), "spec: is "),
])
def test_specs_too_large_for_kopf_or_a_config_map_are_refused_up_front(extra: str, message: str) -> None:
    code, out = run(manifest(extra=extra))
    assert code == 1 and message in out, out
