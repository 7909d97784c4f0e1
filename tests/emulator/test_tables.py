"""kubectl's Table: custom resources print their CRD's additionalPrinterColumns, as kube-apiserver does."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tuneloop.emulator import BackgroundEmulator
from tuneloop.emulator.client import JsonApi
from tuneloop.emulator.tables import accepts_table, human_duration, table

REPO = Path(__file__).resolve().parents[2]
KUBECTL = shutil.which("kubectl") or next((str(p) for p in (REPO / ".tools/bin/kubectl", Path("/work/main/.tools/bin/kubectl"))
                                             if p.exists()), None)
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
COLUMNS = [{"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
           {"name": "Step", "type": "integer", "jsonPath": ".status.progress.step", "priority": 1},
           {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]


@pytest.mark.parametrize(("seconds", "text"), [(45, "45s"), (200, "3m20s"), (17 * 60, "17m"), (5 * 3600 + 600, "5h10m"),
                                               (30 * 3600, "30h"), (76 * 3600, "3d4h"), (12 * 86400, "12d")])
def test_ages_read_like_kubectl(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


def test_table_rows_follow_the_printer_columns() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    obj = {"metadata": {"name": "a", "namespace": "ns", "creationTimestamp": (now - timedelta(minutes=5)).isoformat()},
           "status": {"phase": "Running", "progress": {"step": 7.0}}}
    out = table([obj, {"metadata": {"name": "b"}}], COLUMNS, now, "42")
    assert [c["name"] for c in out["columnDefinitions"]] == ["Name", "Phase", "Step", "Age"]
    assert out["columnDefinitions"][2]["priority"] == 1
    assert [r["cells"] for r in out["rows"]] == [["a", "Running", 7, "5m"], ["b", None, None, None]]
    assert out["rows"][0]["object"]["metadata"]["namespace"] == "ns" and out["metadata"]["resourceVersion"] == "42"


def test_only_a_meta_table_accept_header_asks_for_a_table() -> None:
    assert accepts_table(TABLE)
    assert not accepts_table("application/json")
    assert not accepts_table(None)


def _ftj(name: str) -> dict:
    return {"apiVersion": "tuneloop.dev/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": name, "namespace": "default"},
            "spec": {"task": "sequence-classification", "model": {"source": "s3://m/base/"},
                     "dataset": {"train": "s3://d/train.jsonl"}, "output": {"uri": "s3://m/out/"}}}


def test_the_emulator_serves_tables_of_custom_resources_and_json_otherwise() -> None:
    with BackgroundEmulator(crds=[REPO / "crds"]) as emulator:
        api = JsonApi(emulator.kubeconfig)
        path = "/apis/tuneloop.dev/v1alpha1/namespaces/default/finetunejobs"
        api.create(path, _ftj("router"))
        listed = api.client.call_api("GET", emulator.url + path, {"Accept": TABLE})
        listed.read()
        got = json.loads(listed.data)
        assert got["kind"] == "Table"
        assert [c["name"] for c in got["columnDefinitions"]][:4] == ["Name", "Task", "Phase", "Progress"]
        assert got["rows"][0]["cells"][:2] == ["router", "sequence-classification"]
        assert api.get(path + "/router")["kind"] == "FineTuneJob"  # plain JSON when not asked for a Table
        api.close()


@pytest.mark.skipif(KUBECTL is None, reason="no kubectl binary (PATH, .tools/bin)")
def test_kubectl_get_prints_the_printer_columns() -> None:
    with BackgroundEmulator(crds=[REPO / "crds"]) as emulator:
        api = JsonApi(emulator.kubeconfig)
        api.create("/apis/tuneloop.dev/v1alpha1/namespaces/default/finetunejobs", _ftj("router"))
        api.close()
        run = subprocess.run([KUBECTL, "--kubeconfig", str(emulator.kubeconfig), "get", "ftj", "-o", "wide"],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        header, line = run.stdout.splitlines()
        assert header.split() == ["NAME", "TASK", "PHASE", "PROGRESS", "TRIALS", "STEP", "LOSS", "ATTEMPTS", "AGE"]
        assert line.split()[:2] == ["router", "sequence-classification"]
