"""kube.py against the real emulator with injected API errors (issue 13): 429 waits as long as
the server asks, 409 on create is success, 500 and dropped connections are retried, and the
operator's calls say who they are."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import kopf
import kubernetes
import pytest

from tuneloop.emulator import BackgroundEmulator, Fault
from tuneloop.operator import kube as kube_module
from tuneloop.operator.kube import Kube


@pytest.fixture(scope="module")
def emulator() -> Iterator[BackgroundEmulator]:
    with BackgroundEmulator() as running:
        yield running


@pytest.fixture()
def kube(emulator: BackgroundEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[Kube]:
    monkeypatch.setenv("KUBECONFIG", str(emulator.kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    emulator.emulator.faults.clear()
    yield Kube()  # loads the kubeconfig as in the operator
    emulator.emulator.faults.clear()


def config_map(name: str, namespace: str = "default") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace}, "data": {"k": "v"}}


def test_429_waits_as_long_as_retry_after_says(emulator: BackgroundEmulator, kube: Kube) -> None:
    # Longer than our default delay, so the old fixed delay (10 s) would retry too early.
    emulator.emulator.faults.add(Fault(method="POST", path="/configmaps", status=429, headers={"Retry-After": "25"}))
    with pytest.raises(kopf.TemporaryError) as raised:
        kube.create(config_map("throttled"))
    assert raised.value.delay == 25
    assert "throttled (429)" in str(raised.value)
    assert kube.create(config_map("throttled")) is True  # the rule was for one request


@pytest.mark.parametrize(("value", "delay"), [("0", 1.0), ("3", 3.0), (None, kube_module.RETRY_DELAY), ("soon", kube_module.RETRY_DELAY)])
def test_retry_after_values(value: str | None, delay: float) -> None:
    assert kube_module._retry_after(value) == delay


def test_409_on_create_is_success_and_500_is_retried(emulator: BackgroundEmulator, kube: Kube) -> None:
    emulator.emulator.faults.add(Fault(method="POST", path="/configmaps", status=409))
    assert kube.create(config_map("conflict")) is False  # "already there": never a second child
    emulator.emulator.faults.add(Fault(method="POST", path="/configmaps", status=500))
    with pytest.raises(kopf.TemporaryError) as raised:
        kube.create(config_map("conflict"))
    assert raised.value.delay == kube_module.RETRY_DELAY and not isinstance(raised.value, kopf.PermanentError)
    assert kube.create(config_map("conflict")) is True


def test_dropped_connection_is_temporary_and_the_retry_succeeds(emulator: BackgroundEmulator, kube: Kube) -> None:
    emulator.emulator.faults.add(Fault(method="PATCH", path="/configmaps/dropped", drop=True))
    kube.create(config_map("dropped"))
    with pytest.raises(kopf.TemporaryError):
        kube.patch("ConfigMap", "default", "dropped", {"data": {"k": "w"}})
    kube.patch("ConfigMap", "default", "dropped", {"data": {"k": "w"}})
    assert kube.read("ConfigMap", "default", "dropped")["data"] == {"k": "w"}


def test_the_operators_calls_carry_its_user_agent(emulator: BackgroundEmulator, kube: Kube) -> None:
    seen: list[str] = []
    emulator.emulator.faults.add(Fault(user_agent=r"^tuneloop-operator/", times=None,
                                       callback=lambda request: seen.append(request.method)))
    kube.read("ConfigMap", "default", "nothing")
    client = kubernetes.config.new_client_from_config(config_file=str(emulator.kubeconfig))
    kubernetes.client.CoreV1Api(client).list_namespaced_config_map("default")  # someone else: not counted
    client.close()
    assert seen == ["GET"]
