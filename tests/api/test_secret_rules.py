"""Secrets by value are refused by name and by shape; common non-secrets pass (issue 13)."""

from __future__ import annotations

import pytest

from support.manifests import finetunejob, with_change
from tuneloop.api.validate import validate_manifest

SECRET_NAMES = ["DB_PASS", "ENCRYPTION_KEY", "AZURE_STORAGE_KEY", "MINIO_ACCESS_KEY", "S3_ACCESS_KEY", "STRIPE_KEY",
                "SIGNING_KEY", "SESSION_KEY", "PASSPHRASE", "SLACK_WEBHOOK_URL", "SENTRY_DSN", "AUTH_HEADER", "JWT",
                "BEARER", "COOKIE", "NPM_AUTH", "HF_TOKEN", "WANDB_API_KEY", "DB_PASSWORD", "GITHUB_TOKEN", "apiKey"]
PLAIN_NAMES = ["TOKENIZERS_PARALLELISM", "MAX_TOKENS", "GOOGLE_APPLICATION_CREDENTIALS", "HF_HOME", "NCCL_DEBUG",
               "PYTHONUNBUFFERED", "WANDB_PROJECT"]
SECRET_VALUES = ["AKIAIOSFODNN7EXAMPLE", "ghp_" + "a1" * 18, "sk-" + "Ab3" * 12, "xoxb-123456789012-abcdef",
                 "hf_" + "x" * 34, "-----BEGIN OPENSSH PRIVATE KEY-----\nabc", "postgres://app:hunter2@db:5432/x"]


def problems(doc: dict) -> list[str]:
    return [str(p) for p in validate_manifest(doc).problems]


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_looking_names_need_value_from(name: str) -> None:
    found = problems(with_change(finetunejob(), "spec.env", [{"name": name, "value": "x"}]))
    assert found == [f"spec.env[0].value: {name} looks like a secret; never put it by value, use valueFrom.secretKeyRef"]


@pytest.mark.parametrize("name", PLAIN_NAMES)
def test_common_settings_are_not_taken_for_secrets(name: str) -> None:
    assert problems(with_change(finetunejob(), "spec.env", [{"name": name, "value": "false"}])) == []


@pytest.mark.parametrize("value", SECRET_VALUES)
def test_secret_shaped_values_are_refused_under_any_name_and_never_echoed(value: str) -> None:
    found = problems(with_change(finetunejob(), "spec.env", [{"name": "SETTING", "value": value}]))
    assert len(found) == 1 and found[0].startswith("spec.env[0].value: looks like ")
    assert value not in found[0] and value[:8] not in found[0]


@pytest.mark.parametrize("endpoint", ["http://user:SECRET@minio:9000", "https://key@minio.storage:9000/"])
def test_credentials_in_the_storage_endpoint_are_refused_and_not_echoed(endpoint: str) -> None:
    found = problems(with_change(finetunejob(), "spec.storage", {"endpoint": endpoint}))
    assert found and found[0].startswith("spec.storage.endpoint: must not carry credentials")
    assert "SECRET" not in " ".join(found) and "key@" not in " ".join(found)


def test_plain_endpoint_passes() -> None:
    assert problems(with_change(finetunejob(), "spec.storage", {"endpoint": "http://minio.storage:9000"})) == []
