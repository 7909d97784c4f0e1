"""`GET /metrics`: requests served by client, verb and resource, so a benchmark can count
what the operator asked of the API (bench/operator_scale.py) apart from its own requests."""

from __future__ import annotations

import re
import urllib.request

import kubernetes

from tuneloop.emulator import BackgroundEmulator


def served(emulator: BackgroundEmulator, client: str) -> dict[tuple[str, str, str], int]:
    with urllib.request.urlopen(emulator.url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    counts = {}
    for labels, value in re.findall(r"^apiserver_request_total\{(.*)\} (\d+)$", text, re.M):
        fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if fields["client"] == client:
            counts[fields["verb"], fields["resource"], fields["subresource"]] = int(value)
    return counts


def test_requests_are_counted_per_client_verb_and_resource(emulator: BackgroundEmulator, namespace: str) -> None:
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(emulator.kubeconfig), client_configuration=config)
    with kubernetes.client.ApiClient(config) as client:
        client.user_agent = "counted-client/1.0"
        core = kubernetes.client.CoreV1Api(client)
        core.create_namespaced_config_map(namespace, {"metadata": {"name": "a"}})
        core.read_namespaced_config_map("a", namespace)
        core.read_namespaced_config_map("a", namespace)
        core.list_namespaced_config_map(namespace)
        core.patch_namespaced_config_map("a", namespace, {"data": {"k": "v"}})
        core.delete_namespaced_config_map("a", namespace)

    assert served(emulator, "counted-client") == {
        ("CREATE", "configmaps", ""): 1, ("GET", "configmaps", ""): 2, ("LIST", "configmaps", ""): 1,
        ("PATCH", "configmaps", ""): 1, ("DELETE", "configmaps", ""): 1,
    }
    assert served(emulator, "nobody") == {}
