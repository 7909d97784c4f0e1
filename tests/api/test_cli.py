"""`tuneloop validate` as a pipeline uses it: real files, real exit codes, one line per problem."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import yaml

from support.manifests import finetunejob, with_change
from tuneloop.api.cli import main

REPO = Path(__file__).resolve().parents[2]


def run(argv, stdin=""):
    out = io.StringIO()
    code = main(argv, stdin=io.StringIO(stdin), out=out)
    return code, out.getvalue()


def test_examples_folder_is_valid_via_console_script():
    proc = subprocess.run(["tuneloop", "validate", "-f", str(REPO / "examples")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 invalid" in proc.stdout


def test_invalid_manifest_gives_file_doc_path_line_and_exit_1(tmp_path):
    good, bad = finetunejob(), with_change(finetunejob(), "spec.training.batchSize", 0)
    path = tmp_path / "jobs.yaml"
    path.write_text(yaml.safe_dump_all([good, bad]))
    code, out = run(["validate", "-f", str(path)])
    assert code == 1
    assert f"{path}:2: spec.training.batchSize: 0 is too small; must be >= 1" in out.splitlines()
    assert f"{path}:1:" not in out


def test_a_learning_rate_written_2e_05_is_a_number(tmp_path):
    # kustomize and Python write small floats without a dot; the API server reads them as numbers.
    path = tmp_path / "job.yaml"
    path.write_text((REPO / "examples/finetunejob-classification.yaml").read_text().replace("learningRate: 5.0e-5", "learningRate: 2e-05"))
    assert "2e-05" in path.read_text()
    code, out = run(["validate", "-f", str(path)])
    assert code == 0, out


def test_directory_is_walked_and_other_kinds_skipped(tmp_path):
    (tmp_path / "apps" / "router").mkdir(parents=True)
    (tmp_path / "apps" / "router" / "job.yml").write_text(yaml.safe_dump(finetunejob()))
    (tmp_path / "apps" / "deploy.yaml").write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n")
    (tmp_path / "README.md").write_text("# not a manifest")
    code, out = run(["validate", "-f", str(tmp_path)])
    assert code == 0, out
    assert "skipped: apps/v1 Deployment is not a Tuneloop kind" in out
    assert "1 Tuneloop manifest(s) checked: 1 valid, 0 invalid; 1 other document(s) skipped" in out


def test_a_bare_spec_file_is_skipped_with_a_plain_note(tmp_path):
    (tmp_path / "trainer-config.yaml").write_text(yaml.safe_dump(finetunejob()["spec"]))
    code, out = run(["validate", "-f", str(tmp_path)])
    assert code == 0
    assert "skipped: no apiVersion or kind (not a Kubernetes manifest)" in out


def test_stdin():
    code, out = run(["validate", "-f", "-", "-q"], stdin=yaml.safe_dump(with_change(finetunejob(), "spec.task", "chat")))
    assert code == 1
    assert out.startswith("-:1: spec.task: 'chat' is not allowed")


def test_malformed_yaml_is_unreadable_not_a_crash(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("spec:\n  task: [unclosed\n")
    code, out = run(["validate", "-f", str(path)])
    assert code == 2
    assert "not valid YAML" in out


def test_missing_path_is_unreadable(tmp_path):
    code, out = run(["validate", "-f", str(tmp_path / "nope.yaml")])
    assert code == 2 and "no such file or directory" in out


def test_unreadable_wins_over_invalid(tmp_path):
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(with_change(finetunejob(), "spec.task", "x")))
    (tmp_path / "broken.yaml").write_text("a: b: c")
    code, _ = run(["validate", "-f", str(tmp_path)])
    assert code == 2


def test_old_manifests_enable_immutability_checks(tmp_path):
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(yaml.safe_dump(finetunejob()))
    new.write_text(yaml.safe_dump(with_change(finetunejob(), "spec.output.uri", "s3://models/other/")))
    assert run(["validate", "-f", str(new)])[0] == 0
    code, out = run(["validate", "-f", str(new), "--old", str(old)])
    assert code == 1 and "spec.output.uri: output.uri is immutable" in out


def test_wrong_types_everywhere_never_crash(tmp_path):
    docs = ["[1, 2]", "42", "apiVersion: tuneloop.dev/v1alpha1\nkind: FineTuneJob\nmetadata: 3\nspec: {model: [], training: 5}",
            "apiVersion: tuneloop.dev/v1alpha1\nkind: MaintenancePolicy\nmetadata: {name: p}\nspec: {jobTemplate: {spec: []}, triggers: 1}"]
    path = tmp_path / "weird.yaml"
    path.write_text("\n---\n".join(docs))
    code, out = run(["validate", "-f", str(path)])
    assert code == 1
    assert "Traceback" not in out


def test_help_runs_without_torch():
    code = "import sys, tuneloop.api.cli, tuneloop.api.validate; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
