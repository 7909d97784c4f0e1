"""Static checks of the trainer image's packaging (issue 8 item 4): the base image's torch meets
the trainer extra's bound, the bounds admit what the tests run on, and transformers 5 can use
that torch (it disables torch below 2.6: `transformers/utils/import_utils.py`)."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version

from packaging.requirements import Requirement
from packaging.version import Version

from trainer_testkit import REPO

TRANSFORMERS_MIN_TORCH = Version("2.6")


def trainer_requirements() -> dict[str, Requirement]:
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["trainer"]
    return {r.name: r for r in map(Requirement, extra)}


def base_image_torch() -> Version:
    line = next(line for line in (REPO / "Dockerfile.trainer").read_text().splitlines() if line.startswith("FROM "))
    match = re.fullmatch(r"FROM pytorch/pytorch:(\d+\.\d+\.\d+)-\S+", line.strip())
    assert match, f"Dockerfile.trainer must start from a pytorch/pytorch:<torch version>-... image, found {line!r}"
    return Version(match.group(1))


def test_base_image_torch_meets_the_trainer_bound_and_transformers() -> None:
    torch = base_image_torch()
    assert torch in trainer_requirements()["torch"].specifier, "pip would replace the base image's CUDA torch"
    assert torch >= TRANSFORMERS_MIN_TORCH


def test_every_trainer_dependency_has_a_lower_bound_admitting_the_tested_versions() -> None:
    requirements = trainer_requirements()
    assert requirements["transformers"].specifier.contains("6.0") is False  # a major version is never assumed
    for name, requirement in requirements.items():
        assert any(s.operator in (">=", "==", "~=") for s in requirement.specifier), f"{name} needs a lower bound"
        assert requirement.specifier.contains(version(name), prereleases=True), f"tested {name} {version(name)} is outside {requirement}"
