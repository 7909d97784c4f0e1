"""The operator's allow-lists for images, ServiceAccounts and priority classes (issue 13)."""

from __future__ import annotations

import pytest

from support.manifests import finetunejob
from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.operator.allowlist import AllowLists, check_allowed
from tuneloop.operator.config import OperatorConfig
from tuneloop.operator.handlers import parse

LISTS = AllowLists(images=("registry.corp/ml/*",), service_accounts=("s3-reader",), priority_classes=("batch-low",))


def spec(**over: object) -> FineTuneJobSpec:
    return FineTuneJobSpec.from_dict(finetunejob(**over)["spec"])


@pytest.mark.parametrize("over, path", [
    ({"image": "docker.io/evil/miner:latest"}, "spec.image"),
    ({"image": "registry.corp/ml-evil/x:1"}, "spec.image"),
    ({"storage": {"serviceAccountName": "cluster-admin-irsa"}}, "spec.storage.serviceAccountName"),
    ({"resources": {"priorityClassName": "system-cluster-critical"}}, "spec.resources.priorityClassName"),
])
def test_what_the_lists_exclude_is_refused(over: dict, path: str) -> None:
    problems = check_allowed(spec(**over), LISTS)
    assert [p.path for p in problems] == [path]
    assert "not allowed by this operator" in problems[0].message


@pytest.mark.parametrize("over", [
    {},  # the operator's default trainer image
    {"image": "registry.corp/ml/trainer:2"},
    {"storage": {"serviceAccountName": "s3-reader"}},
    {"resources": {"priorityClassName": "batch-low"}},
])
def test_what_the_lists_include_passes(over: dict) -> None:
    assert check_allowed(spec(**over), LISTS) == []


def test_empty_lists_allow_everything() -> None:
    assert check_allowed(spec(image="anything:1", resources={"priorityClassName": "x"}), AllowLists()) == []


def test_lists_come_from_the_environment_and_reach_the_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNELOOP_ALLOWED_IMAGES", "registry.corp/ml/*, ghcr.io/tuneloop/*")
    monkeypatch.setenv("TUNELOOP_ALLOWED_SERVICE_ACCOUNTS", "")
    config = OperatorConfig.from_env()
    assert config.allowed == AllowLists(images=("registry.corp/ml/*", "ghcr.io/tuneloop/*"))
    parsed, problems = parse(finetunejob(image="docker.io/x:1")["spec"], "demo", "ml", config.allowed)
    assert [p.path for p in problems] == ["spec.image"]
