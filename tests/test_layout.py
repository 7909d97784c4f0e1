"""The repository layout keeps its promises: no `operator` package, a torch-free operator."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_operator_is_still_the_standard_library():
    # Run from the repo root, where a package called `operator` would shadow the stdlib.
    code = "import operator, tuneloop.api, tuneloop.operator, tuneloop.trainer; print(operator.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert Path(out.strip()).parent == Path(sysconfig.get_paths()["stdlib"])


def test_source_roots_are_namespace_parts():
    for folder in ("operator", "operator/tuneloop", "trainer", "trainer/tuneloop"):
        assert not (REPO / folder / "__init__.py").exists(), folder


def test_operator_extra_never_pulls_torch():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    heavy = ("torch", "transformers", "accelerate", "peft")
    assert not [d for d in extras["operator"] if d.startswith(heavy)]
    code = "import sys, tuneloop.api.validate, tuneloop.tuning.study, tuneloop.trainer.config; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_wheel_holds_the_namespace_parts_and_the_crds(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
                   check=True, capture_output=True)
    (wheel,) = tmp_path.glob("tuneloop-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "tuneloop/api/crds/finetunejobs.yaml" in names
    assert "tuneloop/api/validate.py" in names and "tuneloop/trainer/__init__.py" in names
    assert "tuneloop/operator/__init__.py" in names
    assert not [n for n in names if n.startswith("operator/") or n == "tuneloop/__init__.py"]
