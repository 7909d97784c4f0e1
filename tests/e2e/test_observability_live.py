"""The dashboard and the alert rules against the real Prometheus server, scraping a real run.

The operator (a subprocess) runs a FineTuneJob whose pod the local kubelet starts as the
real `tuneloop-train` on a tiny BERT, reading and writing moto's S3 (as in test_full_loop).
Debian's `prometheus` scrapes the operator's metrics port and the training pod's (found, as a
PodMonitor would, from the pod's `metrics` port), with the rules file loaded; a
MaintenancePolicy beside the job, its metric trigger watching this Prometheus, keeps Ready
(NOT_LIVE says which two policy metrics that leaves out). Then every
PromQL expression of the dashboard must return data for this job over the run, every
variable must list it, and every alert rule must parse, evaluate and be healthy in
Prometheus' own rule manager. GPU-only panels (MFU, GPU memory) may be empty on a CPU.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
from e2e.harness import Cluster, OperatorProcess, resource_path, wait_for
from e2e.test_full_loop import BATCH_SIZE, TRAIN_TIMEOUT, kubelet, s3, s3_secret, tiny_bert_s3  # noqa: F401  (fixtures)
from observability.observability import GPU_ONLY, RULES, dashboard_queries, metric_names, rules, variable_queries
from support.prometheus import PrometheusServer
from trainer_testkit import BUCKET, classification_rows, upload_jsonl

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus missing: run .ci/setup")

JOB = "watched"
POLICY = "guard"
# A MaintenancePolicy the operator keeps Ready during the run (an adopted champion, a metric
# trigger on this Prometheus that does not breach) exports every policy metric but these two:
# no retrain starts (training a revision is a second run), so neither its counter nor the time
# of the last successful retrain exists. promtool's unit tests and the export check cover them.
NOT_LIVE = {"tuneloop_policy_retrains_total", "tuneloop_policy_last_retrain_timestamp_seconds"}
TRAINERS = "tuneloop-trainer"
SCRAPE = 0.25  # seconds between scrapes
# The step of the range queries. A trainer's series live from one scrape to the first failed
# one, which marks them stale: after the trainer exits, that is the next scrape. One torch
# thread trains this job in a few seconds, so the window can be under a second (CI once saw
# every 1 s step miss it while an instant query had caught it); 0.1 s cannot step over a sample.
STEP = 0.1


@pytest.fixture
def prometheus(operator: OperatorProcess, tmp_path: Path) -> Iterator[PrometheusServer]:
    folder = tmp_path / "prometheus"
    folder.mkdir()
    # Scraped every 250 ms: `increase()` in the panels needs two samples of a series, and one
    # torch thread trains its steps in a few seconds, so 1 s scrapes could miss a checkpoint.
    server = PrometheusServer(folder, static={"tuneloop-operator": [f"127.0.0.1:{operator.metrics_port}"]},
                              file_sd=[TRAINERS], rule_files=[RULES], interval=f"{int(SCRAPE * 1000)}ms")
    server.start()
    yield server
    server.stop()


def job_spec(cluster: Cluster, s3: Any, model: str, train: str, secret: str) -> dict:  # noqa: F811 - the s3 fixture
    return {
        "task": "sequence-classification",
        "model": {"source": model},
        "dataset": {"train": train},
        "output": {"uri": f"s3://{BUCKET}/runs/{cluster.ns}/{JOB}/", "saveEverySteps": 20, "keepLast": 2},
        # Long enough for several scrapes, with evaluations and checkpoints between them.
        "training": {"maxSteps": 320, "evalEverySteps": 20, "batchSize": BATCH_SIZE, "maxSeqLength": 16,
                     "learningRate": 3e-3, "seed": 1},
        "resources": {"nodes": 1, "gpusPerNode": 0, "cpu": "1", "memory": "2Gi"},
        "storage": {"endpoint": s3.endpoint, "region": "us-east-1", "credentialsSecret": {"name": secret}},
    }


def submit(cluster: Cluster, s3: Any, model: str, train: str, secret: str) -> None:  # noqa: F811 - the s3 fixture
    spec = job_spec(cluster, s3, model, train, secret)
    cluster.api.create(cluster.ftj_path(), {"apiVersion": "tuneloop.dev/v1alpha1", "kind": "FineTuneJob",
                                            "metadata": {"name": JOB, "namespace": cluster.ns}, "spec": spec})


def submit_policy(cluster: Cluster, s3: Any, model: str, train: str, secret: str, prometheus_url: str) -> None:  # noqa: F811
    spec = {
        "model": POLICY, "adoptModelURI": model,  # champion r0 at once: no first revision to train
        "jobTemplate": {"spec": job_spec(cluster, s3, model, train, secret)},
        "evaluation": {"dataset": {"uri": train}, "metric": "accuracy"},
        # Watched on the real Prometheus of this test; 0.9 is not below 0.5: Ready, nothing retrains.
        "triggers": {"metric": {"source": "prometheus", "query": "vector(0.9)", "prometheusURL": prometheus_url,
                                "operator": "<", "threshold": 0.5, "for": "10m"}},
        "promotion": {"metric": "accuracy", "direction": "maximize"},
    }
    cluster.api.create(resource_path("tuneloop.dev/v1alpha1", "maintenancepolicies", cluster.ns),
                       {"apiVersion": "tuneloop.dev/v1alpha1", "kind": "MaintenancePolicy",
                        "metadata": {"name": POLICY, "namespace": cluster.ns}, "spec": spec})


def policy_ready(cluster: Cluster) -> bool:
    status = (cluster.api.get(resource_path("tuneloop.dev/v1alpha1", "maintenancepolicies", cluster.ns, POLICY)) or {}).get("status") or {}
    return any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or ())


def metrics_port(cluster: Cluster) -> int | None:
    for pod in cluster.pods(JOB):
        if (pod.get("status") or {}).get("phase") == "Running":
            return next(p["containerPort"] for p in pod["spec"]["containers"][0]["ports"] if p["name"] == "metrics")
    return None


def scrape_report(prometheus: PrometheusServer, start: float, end: float) -> str:
    """For a failure: how the trainer target's scrapes went, and whose trainer series Prometheus holds."""
    up = [v for s in prometheus.query_range(f'up{{job="{TRAINERS}"}}', start, end, step=SCRAPE) for _, v in s["values"]]
    owners = {(s["metric"].get("namespace"), s["metric"].get("job"), s["metric"].get("instance"))
              for s in prometheus.query_range("tuneloop_trainer_data_rows", start, end, step=STEP)}
    return (f"\ntrainer target scrapes (up over the run, every {SCRAPE}s): {up.count('1')} ok, {up.count('0')} failed"
            f"\ntrainer series held, as (namespace, job, instance): {sorted(owners, key=str)}")


def as_grafana_would(expr: str, namespace: str) -> str:
    """The dashboard's variables as Grafana substitutes them for one namespace and job (names hold no regex metacharacters)."""
    return (expr.replace("$__rate_interval", "5s").replace("$namespace", namespace).replace("$job", JOB)
            .replace("$policy", POLICY))


@pytest.mark.plays_controllers
def test_every_dashboard_query_returns_data_and_every_rule_evaluates(cluster: Cluster, operator: OperatorProcess, kubelet,  # noqa: F811
                                                                     s3, tiny_bert_s3, s3_secret,  # noqa: F811
                                                                     prometheus: PrometheusServer) -> None:
    started = time.time()
    rows = classification_rows(300, seed=11)
    rows += rows[:15] + [{"text": "", "label": rows[0]["label"]}] * 4  # duplicates and empty rows: dropped, by reason
    train = upload_jsonl(s3, f"data/{cluster.ns}/train.jsonl", rows)
    submit(cluster, s3, tiny_bert_s3, train, s3_secret)
    submit_policy(cluster, s3, tiny_bert_s3, train, s3_secret, prometheus.url)

    port = wait_for(lambda: metrics_port(cluster), timeout=TRAIN_TIMEOUT, what="a running training pod")
    prometheus.set_targets(TRAINERS, [f"127.0.0.1:{port}"])
    # Scraped while it trains: an evaluation and a checkpoint have landed in Prometheus.
    def seen(metric: str) -> list[dict]:
        return prometheus.query_range(f'{metric}{{namespace="{cluster.ns}", job="{JOB}"}}', started, time.time(), step=STEP)
    wait_for(lambda: seen("tuneloop_trainer_eval_loss") and seen("tuneloop_trainer_checkpoint_bytes"),
             timeout=TRAIN_TIMEOUT, interval=0.5, what="the trainer's eval loss and checkpoint size in Prometheus")
    # Twice the full loop's margin: on a shared, busy machine the trainer's steps alone can take a minute.
    cluster.wait_phase(JOB, "Succeeded", timeout=2 * TRAIN_TIMEOUT)
    wait_for(lambda: policy_ready(cluster) and prometheus.query(f'tuneloop_policy_watched_value{{policy="{POLICY}"}}'),
             timeout=30, interval=0.5, what="the policy Ready and its watched value in Prometheus")
    time.sleep(3)  # a few more scrapes of the operator after Succeeded, and rule evaluations

    end = time.time()
    empty = []
    for title, expr in dashboard_queries():
        if metric_names(expr) <= NOT_LIVE:
            continue
        series = prometheus.query_range(as_grafana_would(expr, cluster.ns), started, end, step=STEP)
        if not series and not (metric_names(expr) <= GPU_ONLY and not torch.cuda.is_available()):
            empty.append(f"{title}: {expr}")
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty) + scrape_report(prometheus, started, end)
    assert {s["metric"]["reason"] for s in prometheus.query_range(
        f'tuneloop_trainer_data_rows_dropped{{job="{JOB}"}}', started, end, step=STEP)} >= {"duplicate", "empty"}

    for name, query in variable_queries():
        metric, label = re.fullmatch(r"label_values\((.+), (\w+)\)", query).groups()
        values = prometheus.api(f"label/{label}/values", **{"match[]": as_grafana_would(metric, cluster.ns),
                                                            "start": started, "end": end})
        assert {"namespace": cluster.ns, "finetunejob": JOB, "policy": POLICY}[label] in values, (name, values)

    for rule in rules():
        prometheus.query(rule["expr"])  # parses and evaluates, or raises with Prometheus' error
    loaded = {r["name"]: r for group in prometheus.api("rules")["groups"] for r in group["rules"]}
    assert set(loaded) == {r["alert"] for r in rules()}
    wait_for(lambda: all(r["health"] == "ok" and r["lastEvaluation"][:4] != "0001" for r in
                         (x for g in prometheus.api("rules")["groups"] for x in g["rules"])), timeout=10, what="every rule evaluated, healthy")
    # A healthy run pages nobody (some alerts may be pending: Stuck while it was Pending).
    firing = [a["labels"] for a in prometheus.api("alerts")["alerts"] if a["state"] == "firing"]
    assert not firing, firing
