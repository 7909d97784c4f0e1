"""Specs the API server used to accept and the operator then choked on (issue 13)."""

from __future__ import annotations

import pytest

from e2e.harness import Cluster, OperatorProcess
from tuneloop.emulator.client import ApiError


@pytest.mark.parametrize("value_from", [
    {"secretKeyRef": 5},
    {"secretKeyRef": {"name": "s"}},
    {"secretKeyRef": {"name": "s", "key": "k"}, "fieldRef": {"fieldPath": "metadata.name"}},
    {},
])
def test_malformed_value_from_is_refused_by_the_api_server(cluster: Cluster, operator: OperatorProcess, value_from: dict) -> None:
    with pytest.raises(ApiError) as err:
        cluster.create_ftj("odd-env", env=[{"name": "A", "valueFrom": value_from}])
    assert "valueFrom" in str(err.value)
    assert cluster.ftj("odd-env") is None
