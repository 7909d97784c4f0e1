"""The MaintenancePolicy closed loop, end to end: the model got worse -> a better model serves.

Everything is real: the operator (a subprocess, killed and restarted mid-loop), the API
emulator with its local kubelet running the Jobs' pods as local processes of the real
`tuneloop-train` (revisions train, evaluation Jobs score), moto's S3 server, and the real
Prometheus server (the Debian package) scraping a metric whose value the test sets. The
models are tiny (a 2-layer BERT, 100 steps) so each retrain takes seconds.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import prometheus_client as prom
import pytest
from e2e.harness import Cluster, OperatorProcess, resource_path, wait_for
from tuneloop.emulator.kubelet import Kubelet

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer"))
from trainer_testkit import BUCKET, build_tiny_model, classification_rows, free_port, upload_dir, upload_jsonl
from support.manifests import schemaless_crd

pytestmark = [pytest.mark.plays_controllers, pytest.mark.slow,
              pytest.mark.skipif(shutil.which("prometheus") is None, reason="needs the prometheus server (Debian package)")]

LOOP_TIMEOUT = 180  # train (torch start dominates) + one evaluation run, on 2 busy cores
MPOL_API = "tuneloop.dev/v1alpha1"
POLICY = "MaintenancePolicy"  # the involvedObject kind of a policy's Events
KSERVE_CRD = schemaless_crd("serving.kserve.io", "v1beta1", "InferenceService", "inferenceservices")


# --- the outside world: S3, Prometheus and the metric it scrapes ------------------------------------


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket=BUCKET)
    client.endpoint = f"http://127.0.0.1:{port}"
    yield client
    server.stop()


@pytest.fixture(scope="module")
def tiny_bert_s3(s3: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    return upload_dir(s3, build_tiny_model("bert", tmp_path_factory.mktemp("tiny-bert")), "models/policy-bert")


class OnlineAccuracy:
    """The serving system's metric: a /metrics endpoint whose value the test sets."""

    def __init__(self) -> None:
        self.registry = prom.CollectorRegistry()
        self.gauge = prom.Gauge("ticket_router_online_accuracy", "Online accuracy.", registry=self.registry)
        self.port = free_port()
        self.server, self.thread = prom.start_http_server(self.port, addr="127.0.0.1", registry=self.registry)

    def set(self, value: float) -> None:
        self.gauge.set(value)

    def close(self) -> None:
        self.server.shutdown()


class Prometheus:
    """The real Prometheus server, scraping `target` every second."""

    def __init__(self, target: str, workdir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        config.write_text(f"global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n"
                          f"  - job_name: router\n    static_configs:\n      - targets: ['{target}']\n")
        self.log = open(workdir / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"], stdout=self.log, stderr=subprocess.STDOUT)

    def value(self, query: str) -> float | None:
        import json
        import urllib.parse
        import urllib.request
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/query?query={urllib.parse.quote(query)}", timeout=2) as r:
                result = json.load(r)["data"]["result"]
        except OSError:
            return None
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


@pytest.fixture
def online() -> Iterator[OnlineAccuracy]:
    metric = OnlineAccuracy()
    metric.set(0.95)
    yield metric
    metric.close()


@pytest.fixture
def prometheus(online: OnlineAccuracy, tmp_path: Path) -> Iterator[Prometheus]:
    server = Prometheus(f"127.0.0.1:{online.port}", tmp_path)
    try:
        wait_for(lambda: server.value("ticket_router_online_accuracy") == 0.95, timeout=30, interval=0.3,
                 what="Prometheus scraping the online metric")
        yield server
    finally:
        server.stop()


# --- the cluster side ----------------------------------------------------------------------------------------


@pytest.fixture
def kubelet(kubeconfig: str, namespace: str, tmp_path: Path) -> Iterator[Kubelet]:
    # Revisions' training Jobs and the policy's evaluation Jobs alike.
    node = Kubelet(kubeconfig, namespace, selector="app.kubernetes.io/part-of=tuneloop", log_dir=tmp_path / "pods",
                   env={"TUNELOOP_PROGRESS": "never", "OMP_NUM_THREADS": "1"}, max_grace=10)
    node.start()
    yield node
    node.stop()
    print(node.logs_tail(80))


@pytest.fixture
def policy_operator(kubeconfig: str, namespace: str, tmp_path: Path, cluster: Cluster) -> Iterator[OperatorProcess]:
    process = OperatorProcess(kubeconfig, namespace, tmp_path, TUNELOOP_POLICY_INTERVAL="0.5",
                              TUNELOOP_POLICY_STALLED_AFTER="2", TUNELOOP_POLICY_BACKOFF="1", TUNELOOP_POLICY_BACKOFF_MAX="2",
                              TUNELOOP_POLICY_QUERY_TIMEOUT="2", TUNELOOP_POLICY_DATA_INTERVAL="1")
    process.start()
    yield process
    process.stop()
    print(process.log_tail(80))


@pytest.fixture
def s3_secret(cluster: Cluster) -> str:
    data = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    cluster.api.create(resource_path("v1", "secrets", cluster.ns), {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-credentials"},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})
    return "s3-credentials"


def policy(cluster: Cluster, s3: Any, name: str, *, model: str, train: str, fresh: str, secret: str, **spec: Any) -> dict:
    template = {
        "task": "sequence-classification",
        "model": {"source": model},
        "dataset": {"train": train},
        "output": {"uri": f"s3://{BUCKET}/policies/{cluster.ns}/{name}/", "keepLast": 1},
        "training": {"maxSteps": 100, "batchSize": 8, "maxSeqLength": 16, "learningRate": 3e-3, "seed": 1, "packing": False},
        "resources": {"gpusPerNode": 0, "cpu": "1", "memory": "2Gi"},
        "storage": {"endpoint": s3.endpoint, "region": "us-east-1", "credentialsSecret": {"name": secret}},
        "runPolicy": {"backoffLimit": 1},
    }
    body = {"apiVersion": MPOL_API, "kind": "MaintenancePolicy", "metadata": {"name": name, "namespace": cluster.ns},
            "spec": {"model": name, "jobTemplate": {"metadata": {"labels": {"team": "support"}}, "spec": template},
                     "evaluation": {"dataset": {"uri": fresh}, "metric": "eval_loss"},
                     "promotion": {"metric": "eval_loss", "direction": "minimize"}, **spec}}
    return cluster.api.create(mpol_path(cluster), body)


def mpol_path(cluster: Cluster, name: str | None = None) -> str:
    return resource_path(MPOL_API, "maintenancepolicies", cluster.ns, name)


def mpol_status(cluster: Cluster, name: str) -> dict:
    return (cluster.api.get(mpol_path(cluster, name)) or {}).get("status") or {}


def condition(status: dict, type_: str) -> dict:
    return next((c for c in status.get("conditions") or () if c["type"] == type_), {})


def revisions(cluster: Cluster, name: str) -> list[str]:
    items = cluster.api.list(cluster.ftj_path(), labelSelector=f"tuneloop.dev/maintenancepolicy={name}")
    return sorted(f["metadata"]["name"] for f in items)


def wait_verdict(cluster: Cluster, name: str, revision: str, timeout: float = LOOP_TIMEOUT) -> dict:
    def probe() -> dict | None:
        entry = next((h for h in mpol_status(cluster, name).get("history") or () if h["revision"] == revision), None)
        return entry if entry and entry["verdict"] not in ("Training", "Evaluating") else None
    return wait_for(probe, timeout=timeout, interval=0.5, what=f"{name} {revision} gated")


def setup_data(s3: Any, cluster: Cluster) -> tuple[str, str]:
    train = upload_jsonl(s3, f"data/{cluster.ns}/train.jsonl", classification_rows(200, seed=21))
    fresh = upload_jsonl(s3, f"data/{cluster.ns}/fresh.jsonl", classification_rows(40, seed=22))
    return train, fresh


# --- the tests -----------------------------------------------------------------------------------------------------


def test_degraded_metric_retrains_gates_and_promotes_to_a_kserve_field_surviving_an_operator_restart(
        cluster: Cluster, policy_operator: OperatorProcess, kubelet: Kubelet, s3: Any, tiny_bert_s3: str, s3_secret: str,
        online: OnlineAccuracy, prometheus: Prometheus) -> None:
    api = cluster.api
    try:
        api.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", KSERVE_CRD)
    except Exception as exc:  # noqa: BLE001 - another test made it already
        if "409" not in str(exc) and "AlreadyExists" not in str(exc):
            raise
    isvc_path = resource_path("serving.kserve.io/v1beta1", "inferenceservices", cluster.ns, "router")
    wait_for(lambda: api.get("/apis/serving.kserve.io/v1beta1"), timeout=20, what="the InferenceService API")
    api.create(isvc_path.rsplit("/", 1)[0], {
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": {"name": "router"},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "huggingface"}, "storageUri": tiny_bert_s3}}}})
    train, fresh = setup_data(s3, cluster)
    policy(cluster, s3, "router", model=tiny_bert_s3, train=train, fresh=fresh, secret=s3_secret,
           adoptModelURI=tiny_bert_s3,  # the untrained model is "in production"
           triggers={"metric": {"source": "prometheus", "prometheusURL": prometheus.url,
                                "query": "ticket_router_online_accuracy", "operator": "<", "threshold": 0.8, "for": "2s"}},
           guards={"cooldown": "1h"},
           promotion={"metric": "eval_loss", "direction": "minimize", "target": {"type": "ObjectField", "objectField": {
               "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "name": "router",
               "fieldPath": "spec.predictor.model.storageUri"}}})

    ready = wait_for(lambda: (s := mpol_status(cluster, "router")).get("phase") == "Ready" and s, timeout=30,
                     what="the policy Ready with the adopted champion")
    assert ready["champion"]["revision"] == "r0" and ready["champion"]["modelURI"] == tiny_bert_s3
    assert ready["metricWatch"]["value"] == 0.95
    time.sleep(3)
    assert revisions(cluster, "router") == []  # healthy: nothing to do

    # The model gets worse in production; after `for` (2 s) the policy retrains.
    online.set(0.5)
    wait_for(lambda: revisions(cluster, "router") == ["router-r1"], timeout=30, what="revision r1 created")
    # The FineTuneJob is created first, the status written right after (a crash in between is adopted).
    status = wait_for(lambda: (s := mpol_status(cluster, "router")).get("activeJob") == "router-r1" and s, timeout=10,
                      what="status naming the active revision")
    assert status["lastTrigger"]["type"] == "metric"
    assert condition(status, "Degraded")["status"] == "True"
    r1 = cluster.ftj("router-r1")
    assert r1["metadata"]["labels"]["team"] == "support" and r1["metadata"]["labels"]["tuneloop.dev/revision"] == "r1"
    assert r1["metadata"]["ownerReferences"][0]["kind"] == "MaintenancePolicy"
    assert r1["spec"]["output"]["uri"] == f"s3://{BUCKET}/policies/{cluster.ns}/router/r1/"

    # The operator dies while r1 trains, and comes back. kopf posts Events from an in-memory
    # queue that dies with it: the two of the trigger are out before the kill.
    cluster.wait_phase("router-r1", "Running", timeout=60)
    cluster.wait_events("router", {"DegradationDetected", "RetrainTriggered"}, kind=POLICY)
    policy_operator.kill()
    policy_operator.start()

    entry = wait_verdict(cluster, "router", "r1")
    assert entry["verdict"] == "Promoted", entry
    assert entry["metric"] < entry["championMetric"] and entry["evaluationRows"] > 0  # both on the same rows
    status = mpol_status(cluster, "router")
    assert status["champion"]["revision"] == "r1"
    model = f"s3://{BUCKET}/policies/{cluster.ns}/router/r1/final/"
    assert status["champion"]["modelURI"] == model
    isvc = wait_for(lambda: (o := api.get(isvc_path))["spec"]["predictor"]["model"]["storageUri"] == model and o,
                    timeout=20, what="the InferenceService's storageUri updated")
    assert isvc["spec"]["predictor"]["model"]["modelFormat"] == {"name": "huggingface"}  # only that field changed
    assert [h["revision"] for h in status["history"]] == ["r0", "r1"]  # no lost history

    # Still degraded (the online metric has not moved), but the cooldown holds the next retrain back.
    wait_for(lambda: "cooldown" in condition(mpol_status(cluster, "router"), "Ready").get("message", ""), timeout=20,
             what="the cooldown named in Ready")
    assert revisions(cluster, "router") == ["router-r1"]  # no duplicate retrain across the restart
    cluster.wait_events("router", {"DegradationDetected", "RetrainTriggered", "ModelPromoted"}, kind=POLICY)
    assert [e for e in cluster.events("router", kind=POLICY) if e["reason"] == "RetrainTriggered"][0].get("count", 1) == 1
    exported = policy_operator.metrics()
    assert 'tuneloop_policy_champion_revision{namespace="%s",policy="router"} 1.0' % cluster.ns in exported
    assert 'tuneloop_policy_threshold{namespace="%s",policy="router"} 0.8' % cluster.ns in exported
    assert 'tuneloop_policy_watched_value{namespace="%s",policy="router"} 0.5' % cluster.ns in exported
    assert 'tuneloop_policy_condition{namespace="%s",policy="router",type="Degraded"} 1.0' % cluster.ns in exported
    assert "tuneloop_policy_last_retrain_timestamp_seconds{" in exported
    # The gate's evaluation Job is cleaned up once its verdict is in status.
    wait_for(lambda: not cluster.job("router-r1-gate"), timeout=20, what="the gate Job deleted")

    # Prometheus goes away: Stalled with the error, and no retrain.
    prometheus.stop()
    stalled = wait_for(lambda: condition(mpol_status(cluster, "router"), "Stalled").get("status") == "True"
                       and condition(mpol_status(cluster, "router"), "Stalled"), timeout=30, what="Stalled")
    assert "Prometheus unreachable" in stalled["message"]
    assert revisions(cluster, "router") == ["router-r1"]
    assert policy_operator.proc.poll() is None  # never crashes


def test_worse_challenger_is_rejected_configmap_keeps_the_champion_and_pinning_rolls_back(
        cluster: Cluster, policy_operator: OperatorProcess, kubelet: Kubelet, s3: Any, tiny_bert_s3: str,
        s3_secret: str) -> None:
    train, fresh = setup_data(s3, cluster)
    policy(cluster, s3, "tickets", model=tiny_bert_s3, train=train, fresh=fresh, secret=s3_secret,
           triggers={"manual": {}}, guards={"cooldown": "1h"}, historyLimit=5,
           promotion={"metric": "eval_loss", "direction": "minimize", "minImprovement": 0.01,
                      "target": {"type": "ConfigMap", "configMap": {"name": "serving", "key": "modelURI"}}})

    # No champion and nothing to adopt: revision 1 trains at once and, alone at the gate, wins.
    r1 = wait_verdict(cluster, "tickets", "r1")
    assert r1["verdict"] == "Promoted" and r1["trigger"] == "initial", r1
    r1_model = f"s3://{BUCKET}/policies/{cluster.ns}/tickets/r1/final/"
    wait_for(lambda: (cluster.config_map("serving") or {}).get("data", {}).get("modelURI") == r1_model, timeout=20,
             what="the ConfigMap key set to r1's model")

    # The team breaks the template (a learning rate that learns nothing), then asks for a retrain.
    cluster.api.patch(mpol_path(cluster, "tickets"), {"spec": {"jobTemplate": {"spec": {"training": {
        "learningRate": 1e-9, "maxSteps": 2}}}}})
    cluster.api.patch(mpol_path(cluster, "tickets"), {"metadata": {"annotations": {"tuneloop.dev/retrain": "try-1"}}})
    r2 = wait_verdict(cluster, "tickets", "r2")  # manual skips the 1 h cooldown
    assert r2["verdict"] == "Rejected" and r2["trigger"] == "manual", r2
    assert r2["metric"] > r2["championMetric"], r2  # worse, measured on the same rows
    status = mpol_status(cluster, "tickets")
    assert status["champion"]["revision"] == "r1"
    assert cluster.config_map("serving")["data"]["modelURI"] == r1_model
    cluster.wait_events("tickets", {"ChallengerRejected"}, kind=POLICY)
    rejected = [e for e in cluster.events("tickets", kind=POLICY) if e["reason"] == "ChallengerRejected"]
    assert rejected and f"{r2['metric']:.4f}" in rejected[0]["message"] and f"{r2['championMetric']:.4f}" in rejected[0]["message"]
    time.sleep(2)
    assert revisions(cluster, "tickets") == ["tickets-r1", "tickets-r2"]  # the same annotation value: once

    # Roll back (here: forward) by pinning: that revision's model is published, promotion held.
    cluster.api.patch(mpol_path(cluster, "tickets"), {"spec": {"pinnedRevision": "r2"}})
    r2_model = f"s3://{BUCKET}/policies/{cluster.ns}/tickets/r2/final/"
    wait_for(lambda: cluster.config_map("serving")["data"]["modelURI"] == r2_model, timeout=20, what="the pinned model published")
    status = mpol_status(cluster, "tickets")
    assert status["champion"]["revision"] == "r2" and condition(status, "Ready")["reason"] == "Pinned"
    cluster.wait_events("tickets", {"RolledBack"}, kind=POLICY)


def test_new_objects_in_s3_fire_new_data_through_a_short_job(cluster: Cluster, policy_operator: OperatorProcess,
                                                             kubelet: Kubelet, s3: Any, tiny_bert_s3: str,
                                                             s3_secret: str) -> None:
    train, fresh = setup_data(s3, cluster)
    incoming = f"s3://{BUCKET}/incoming/{cluster.ns}/"
    policy(cluster, s3, "feed", model=tiny_bert_s3, train=train, fresh=fresh, secret=s3_secret, adoptModelURI=tiny_bert_s3,
           triggers={"newData": {"uri": incoming, "minObjects": 2}}, guards={"cooldown": "0s"})
    checked = wait_for(lambda: ((s := mpol_status(cluster, "feed")).get("newData") or {}).get("checkedAt") and s,
                       timeout=60, what="a first new-data check")
    assert checked["newData"]["objects"] == 0 and revisions(cluster, "feed") == []
    time.sleep(1.1)  # S3 times are whole seconds: the new objects come after the watermark
    upload_jsonl(s3, f"incoming/{cluster.ns}/a.jsonl", classification_rows(10, seed=31))
    assert revisions(cluster, "feed") == []
    upload_jsonl(s3, f"incoming/{cluster.ns}/b.jsonl", classification_rows(10, seed=32))
    wait_for(lambda: revisions(cluster, "feed") == ["feed-r1"], timeout=60, what="newData retrains")
    status = wait_for(lambda: (s := mpol_status(cluster, "feed")).get("activeJob") == "feed-r1" and s, timeout=10,
                      what="status naming r1")
    assert status["lastTrigger"]["type"] == "newData" and "2 new objects" in status["lastTrigger"]["message"]
    assert status["history"][-1]["dataWatermark"] >= status["newData"]["since"]


def test_scheduled_evaluation_scores_the_champion_and_its_value_triggers_a_retrain(
        cluster: Cluster, policy_operator: OperatorProcess, kubelet: Kubelet, s3: Any, tiny_bert_s3: str,
        s3_secret: str) -> None:
    train, fresh = setup_data(s3, cluster)
    policy(cluster, s3, "nightly", model=tiny_bert_s3, train=train, fresh=fresh, secret=s3_secret, adoptModelURI=tiny_bert_s3,
           evaluation={"dataset": {"uri": fresh}, "metric": "accuracy", "schedule": "* * * * *", "timeZone": "Europe/Berlin"},
           triggers={"metric": {"source": "evaluation", "operator": "<", "threshold": 0.99, "for": "0s"}},
           promotion={"metric": "accuracy", "direction": "maximize"})
    first = wait_for(lambda: (s := mpol_status(cluster, "nightly")).get("nextEvaluation") and s, timeout=20,
                     what="nextEvaluation in status")
    assert first["nextEvaluation"].endswith(":00Z") and revisions(cluster, "nightly") == []
    # At the next minute the champion (the untrained r0) is scored on the fresh data by a Job...
    evaluated = wait_for(lambda: (s := mpol_status(cluster, "nightly")).get("lastEvaluation") and s, timeout=150,
                         interval=0.5, what="the scheduled evaluation recorded")
    last = evaluated["lastEvaluation"]
    assert (last["revision"], last["metric"], last["rows"]) == ("r0", "accuracy", 40), last
    assert 0 <= last["value"] < 0.99
    # ... and its value, below the threshold, retrains.
    wait_for(lambda: revisions(cluster, "nightly") == ["nightly-r1"], timeout=20, what="the evaluation's value retrains")
    status = wait_for(lambda: (s := mpol_status(cluster, "nightly")).get("activeJob") == "nightly-r1" and s, timeout=10,
                      what="status naming r1")
    assert status["lastTrigger"]["type"] == "metric" and "evaluation accuracy" in status["lastTrigger"]["message"]
    exported = policy_operator.metrics()
    assert f'tuneloop_policy_watched_value{{namespace="{cluster.ns}",policy="nightly"}} {float(last["value"])}' in exported
