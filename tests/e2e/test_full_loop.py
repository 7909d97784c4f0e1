"""The whole product, end to end: FineTuneJob -> operator -> Job -> pod -> trainer -> S3 -> status.

Everything is real except the node: the operator (a subprocess) against the Kubernetes API
(the emulator, or $KUBECONFIG), `tuneloop.emulator.kubelet` running the Job's pod as a local
process of the real `tuneloop-train` (the container's command, its env resolved, the S3
credentials from a Secret), and moto's S3 server over HTTP. Training is tiny (a 2-layer BERT
with a word-level tokenizer, a few dozen steps) so the file runs in well under two minutes.
One job runs on two nodes: an Indexed Job whose two pods, each a `tuneloop-train` launching
torchrun, rendezvous through rank 0's headless-Service name into one gloo world of size 2.
"""

from __future__ import annotations

import gzip
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from e2e.harness import ApiError, Cluster, OperatorProcess, resource_path, wait_for
from tuneloop.demo.s3 import S3Server, credentials_secret
from tuneloop.emulator.kubelet import Kubelet

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer"))
from trainer_testkit import (
    BUCKET,
    build_tiny_model,
    classification_rows,
    list_keys,
    read_json,
    upload_dir,
    upload_jsonl,
)

# Trainer start (torch, transformers imports) dominates; on 2 busy cores allow a generous margin.
# Only a failing test waits this long: a killed-and-resumed run took ~136 of 200 steps in 90 s
# on a loaded machine, so the bound is a bound, not a speed target.
TRAIN_TIMEOUT = 240
BATCH_SIZE, SEED = 8, 1  # per process (each rank takes batchSize rows of a global batch)


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    """moto's S3 server on a free port (the one `tuneloop demo` runs), with the bucket the jobs use."""
    with S3Server() as server:
        server.create_bucket(BUCKET)
        yield server.client


@pytest.fixture(scope="module")
def tiny_bert_s3(s3: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    return upload_dir(s3, build_tiny_model("bert", tmp_path_factory.mktemp("tiny-bert")), "models/e2e-bert")


@pytest.fixture
def kubelet(kubeconfig: str, namespace: str, tmp_path: Path) -> Iterator[Kubelet]:
    # Pod replacement backoff 0.2 s, doubling (Kubernetes: 10 s), to keep the retry tests short.
    node = Kubelet(kubeconfig, namespace, selector="tuneloop.dev/finetunejob", log_dir=tmp_path / "pods", pod_backoff=0.2,
                   env={"TUNELOOP_PROGRESS": "never"}, max_grace=10, dns_wait=5)
    node.start()
    yield node
    node.stop()
    # Shown by pytest only when the test failed.
    print(node.logs_tail(60))


@pytest.fixture
def s3_secret(cluster: Cluster) -> str:
    """The S3 credentials as a Secret: the pod gets them through secretKeyRef, never the ConfigMap."""
    cluster.api.create(resource_path("v1", "secrets", cluster.ns), credentials_secret("s3-credentials", cluster.ns))
    return "s3-credentials"


def submit(cluster: Cluster, s3: Any, name: str, *, model: str, train: str, max_steps: int | None, save_every: int,
           secret: str, nodes: int = 1, env: dict[str, str] | None = None, **run_policy: Any) -> str:
    """A FineTuneJob reading and writing moto's S3; returns its output URI. No `max_steps`: one epoch."""
    output = f"s3://{BUCKET}/runs/{cluster.ns}/{name}/"
    length = {"maxSteps": max_steps} if max_steps is not None else {"epochs": 1}
    spec = {
        "task": "sequence-classification",
        "model": {"source": model},
        "dataset": {"train": train},
        "output": {"uri": output, "saveEverySteps": save_every, "keepLast": 2},
        "training": {**length, "batchSize": BATCH_SIZE, "maxSeqLength": 16, "learningRate": 3e-3, "seed": SEED},
        "resources": {"nodes": nodes, "gpusPerNode": 0, "cpu": "1", "memory": "2Gi"},
        "storage": {"endpoint": s3.endpoint, "region": "us-east-1", "credentialsSecret": {"name": secret}},
        "runPolicy": {"backoffLimit": 2, **run_policy},
    }
    if env:
        spec["env"] = [{"name": k, "value": v} for k, v in env.items()]
    cluster.api.create(cluster.ftj_path(), {
        "apiVersion": "tuneloop.dev/v1alpha1", "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": cluster.ns}, "spec": spec,
    })
    return output


def key_of(uri: str) -> str:
    return uri.removeprefix(f"s3://{BUCKET}/")


def trainer_pods(cluster: Cluster, name: str) -> list[dict]:
    return sorted(cluster.pods(name), key=lambda p: p["metadata"]["creationTimestamp"] + p["metadata"]["name"])


def terminated(pod: dict) -> dict:
    return pod["status"]["containerStatuses"][0]["state"].get("terminated") or {}


def job_condition(cluster: Cluster, job_name: str, type_: str) -> dict | None:
    job = cluster.job(job_name) or {}
    return next((c for c in (job.get("status") or {}).get("conditions", []) if c["type"] == type_ and c["status"] == "True"), None)


@pytest.mark.plays_controllers
def test_finetunejob_trains_for_real_and_status_converges(cluster: Cluster, operator: OperatorProcess, kubelet: Kubelet,
                                                          s3: Any, tiny_bert_s3: str, s3_secret: str) -> None:
    train = upload_jsonl(s3, f"data/{cluster.ns}/train.jsonl", classification_rows(200, seed=3))
    # Long enough (a few seconds) for several scrapes while it trains; checkpoints every 25 steps.
    output = submit(cluster, s3, "router", model=tiny_bert_s3, train=train, max_steps=100, save_every=25, secret=s3_secret)

    running = cluster.wait_phase("router", "Running", timeout=30)
    assert running["reason"] == "Training"
    status = cluster.wait_phase("router", "Succeeded", timeout=TRAIN_TIMEOUT)

    # The Job and its one pod, as the job controller and kubelet reported them.
    assert job_condition(cluster, "router-trainer", "Complete")["reason"] == "CompletionsReached"
    [pod] = trainer_pods(cluster, "router")
    assert pod["status"]["phase"] == "Succeeded" and terminated(pod)["exitCode"] == 0
    assert "model written to" in kubelet.log(pod["metadata"]["name"])

    # Progress, metrics and checkpoints came from scraping the live trainer's endpoint, then
    # from rank 0's final report (its termination message): complete, with the test metrics.
    assert status["progress"]["step"] == status["progress"]["totalSteps"] == 100, status["progress"]
    assert status["progress"]["percent"] == 100 and status["progress"]["etaSeconds"] == 0
    assert status["metrics"]["train_loss"] > 0
    assert "learning_rate" in status["metrics"]  # scraped only: kept
    assert 0 <= status["metrics"]["accuracy"] <= 1 and "test_loss" in status["metrics"], status["metrics"]
    assert status["checkpoints"]["latest"].startswith(f"{output}checkpoints/step-")
    assert status["checkpoints"]["final"] == f"{output}final/"
    assert status["attempts"] == 1
    assert status["startTime"] and status["completionTime"]

    # The model really is in S3, in Hugging Face format, next to the checkpoints.
    keys = list_keys(s3, key_of(output))
    assert {f"{key_of(output)}final/config.json", f"{key_of(output)}final/model.safetensors",
            f"{key_of(output)}results.json"} <= set(keys)
    assert f"{key_of(status['checkpoints']['latest']).rstrip('/')}/manifest.json" in keys  # complete, not pruned
    cluster.wait_events("router", {"Started", "Succeeded"})


@pytest.mark.plays_controllers
def test_bad_data_fails_at_once_through_the_pod_failure_policy(cluster: Cluster, operator: OperatorProcess, kubelet: Kubelet,
                                                               s3: Any, tiny_bert_s3: str, s3_secret: str) -> None:
    rows = [{"text": r["text"], "queue": r["label"]} for r in classification_rows(60, seed=5)]  # no `label` column
    train = upload_jsonl(s3, f"data/{cluster.ns}/unlabelled.jsonl", rows)
    submit(cluster, s3, "unlabelled", model=tiny_bert_s3, train=train, max_steps=10, save_every=5, secret=s3_secret)

    status = cluster.wait_phase("unlabelled", "Failed", timeout=TRAIN_TIMEOUT)
    assert status["reason"] == "InvalidInput"
    assert "tuneloop-train: error:" in status["message"] and "label" in status["message"], status["message"]
    assert job_condition(cluster, "unlabelled-trainer", "Failed")["reason"] == "PodFailurePolicy"
    [pod] = trainer_pods(cluster, "unlabelled")  # exit code 2: no retry
    assert terminated(pod)["exitCode"] == 2
    assert status["attempts"] == 1
    cluster.wait_event("unlabelled", "Failed")


@pytest.mark.plays_controllers
def test_killed_trainer_is_retried_and_resumes_from_its_checkpoint(cluster: Cluster, operator: OperatorProcess,
                                                                    kubelet: Kubelet, s3: Any, tiny_bert_s3: str,
                                                                    s3_secret: str) -> None:
    train = upload_jsonl(s3, f"data/{cluster.ns}/train.jsonl", classification_rows(400, seed=6))
    output = submit(cluster, s3, "flaky", model=tiny_bert_s3, train=train, max_steps=200, save_every=4, secret=s3_secret)

    def first_checkpoint() -> bool:
        return any(k.endswith("manifest.json") for k in list_keys(s3, f"{key_of(output)}checkpoints/"))

    wait_for(first_checkpoint, timeout=TRAIN_TIMEOUT, interval=0.02, what="the first complete checkpoint")
    [first] = trainer_pods(cluster, "flaky")
    os.kill(kubelet.pid(first["metadata"]["name"]), signal.SIGKILL)  # the node's OOM killer, say
    assert not list_keys(s3, f"{key_of(output)}results.json"), "training ended before the kill: make it longer"

    status = cluster.wait_phase("flaky", "Succeeded", timeout=TRAIN_TIMEOUT)
    assert status["attempts"] == 2
    failed, second = trainer_pods(cluster, "flaky")
    assert terminated(failed)["exitCode"] == 137 and failed["status"]["phase"] == "Failed"
    assert second["status"]["phase"] == "Succeeded"
    assert f"resumed from {output}checkpoints/step-" in kubelet.log(second["metadata"]["name"])
    job = cluster.job("flaky-trainer")
    assert job["status"]["failed"] == 1 and job["status"]["succeeded"] == 1
    cluster.wait_event("flaky", "Retrying")



@pytest.mark.plays_controllers
def test_suspend_checkpoints_on_sigterm_and_resume_continues_from_it(cluster: Cluster, operator: OperatorProcess,
                                                                     kubelet: Kubelet, s3: Any, tiny_bert_s3: str,
                                                                     s3_secret: str) -> None:
    train = upload_jsonl(s3, f"data/{cluster.ns}/train.jsonl", classification_rows(200, seed=7))
    output = submit(cluster, s3, "pausable", model=tiny_bert_s3, train=train, max_steps=300, save_every=1000, secret=s3_secret)
    wait_for(lambda: (cluster.status("pausable").get("progress") or {}).get("step", 0) >= 1, timeout=TRAIN_TIMEOUT,
             what="training under way (scraped step >= 1)")
    [first] = trainer_pods(cluster, "pausable")

    cluster.api.patch(cluster.ftj_path("pausable"), {"spec": {"runPolicy": {"suspend": True}}})
    cluster.wait_phase("pausable", "Suspended", timeout=30)
    # The pod ended (Failed, exit 75) a moment before the job controller deletes it.
    wait_for(lambda: not trainer_pods(cluster, "pausable"), timeout=10, what="the suspended Job's pod deleted")
    assert "SIGTERM: checkpoint at step" in kubelet.log(first["metadata"]["name"])
    assert not list_keys(s3, f"{key_of(output)}results.json"), "training ended before the suspend: make it longer"

    cluster.api.patch(cluster.ftj_path("pausable"), {"spec": {"runPolicy": {"suspend": False}}})
    status = cluster.wait_phase("pausable", "Succeeded", timeout=TRAIN_TIMEOUT)
    [second] = trainer_pods(cluster, "pausable")
    assert f"resumed from {output}checkpoints/step-" in kubelet.log(second["metadata"]["name"])
    assert status["attempts"] == 1  # a suspension is not a failed attempt
    assert "failed" not in cluster.job("pausable-trainer")["status"]
    cluster.wait_events("pausable", {"Suspended", "Resumed", "Succeeded"})

@pytest.mark.plays_controllers
def test_two_node_indexed_job_trains_together(cluster: Cluster, operator: OperatorProcess, kubelet: Kubelet, s3: Any,
                                              tiny_bert_s3: str, s3_secret: str, tmp_path: Path) -> None:
    from tuneloop.trainer.data import epoch_batches

    train = upload_jsonl(s3, f"data/{cluster.ns}/train.jsonl", classification_rows(200, seed=8))
    # One epoch, so the recipe derives totalSteps from the data and the world size; one thread
    # per pod, as two pods share the test machine's cores.
    output = submit(cluster, s3, "pair", model=tiny_bert_s3, train=train, max_steps=None, save_every=4,
                    secret=s3_secret, nodes=2, env={"OMP_NUM_THREADS": "1"})
    status = cluster.wait_phase("pair", "Succeeded", timeout=TRAIN_TIMEOUT)

    # The Indexed Job, its headless Service, and one pod per completion index, both exit 0.
    job = cluster.job("pair-trainer")
    assert (job["spec"]["completionMode"], job["spec"]["completions"], job["spec"]["parallelism"]) == ("Indexed", 2, 2)
    assert job_condition(cluster, "pair-trainer", "Complete")["reason"] == "CompletionsReached"
    assert job["status"]["succeeded"] == 2 and job["status"]["completedIndexes"] == "0-1" and "failed" not in job["status"]
    assert cluster.service("pair-trainer")["spec"]["clusterIP"] == "None"
    pods = sorted(trainer_pods(cluster, "pair"), key=lambda p: p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"])
    assert [p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in pods] == ["0", "1"]
    assert all(p["status"]["phase"] == "Succeeded" and terminated(p)["exitCode"] == 0 for p in pods)
    # Rank 0's DNS name through the headless Service (the kubelet maps it to 127.0.0.1), and
    # both pods got the same (remapped) rendezvous port: MASTER_PORT agrees across the Job.
    env = {e["name"]: e for e in pods[1]["spec"]["containers"][0]["env"]}
    assert env["MASTER_ADDR"]["value"] == "pair-trainer-0.pair-trainer" and env["NNODES"]["value"] == "2"
    assert "job-completion-index" in env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
    dist_ports = {next(port["containerPort"] for port in p["spec"]["containers"][0]["ports"] if port["name"] == "dist") for p in pods}
    assert len(dist_ports) == 1 and dist_ports != {29500}, dist_ports
    rank0, rank1 = (kubelet.log(p["metadata"]["name"]) for p in pods)
    assert "model written to" in rank0
    assert "checkpoint step" not in rank1 and "model written to" not in rank1  # only global rank 0 writes and reports

    # World size 2 really happened: every checkpoint says so and carries both ranks' RNG.
    manifests = [k for k in list_keys(s3, f"{key_of(output)}checkpoints/") if k.endswith("manifest.json")]
    assert manifests
    for manifest in manifests:
        assert read_json(s3, manifest.replace("manifest.json", "trainer_state.json"))["world_size"] == 2
    rng = tmp_path / "rng.pt"
    s3.download_file(BUCKET, manifests[-1].replace("manifest.json", "rng.pt"), str(rng))
    assert len(torch.load(rng, weights_only=True)) == 2
    results = read_json(s3, f"{key_of(output)}results.json")

    # Global batch = batchSize x 2 ranks: half the steps one node would take on the same rows.
    rows = read_json(s3, f"{key_of(output)}data_report.json")["tokenized"]["train"]
    one_node, two_nodes = (len(epoch_batches(rows, BATCH_SIZE, world, SEED, 0)) for world in (1, 2))
    assert status["progress"]["step"] == status["progress"]["totalSteps"] == results["total_steps"] == two_nodes
    assert two_nodes == math.ceil(one_node / 2), (one_node, two_nodes)

    # One set of outputs, written by rank 0 alone: only the 2-rank run's checkpoint steps (a
    # pod training on its own would have gone on to twice as many), nothing stray.
    keys = list_keys(s3, key_of(output))
    assert {k.removeprefix(key_of(output)).split("/")[0] for k in keys} == {"checkpoints", "final", "results.json", "data_report.json"}
    saved = {k.removeprefix(f"{key_of(output)}checkpoints/").split("/")[0] for k in keys if "/checkpoints/" in k}
    # saveEverySteps 4 and the final step (review item 17), keepLast 2
    assert saved == {f"step-{s:08d}" for s in sorted(set(range(4, two_nodes + 1, 4)) | {two_nodes})[-2:]}, saved
    assert status["checkpoints"]["final"] == f"{output}final/"
    assert f"{key_of(output)}final/model.safetensors" in keys


def kill_rank_1_after_the_first_checkpoint(cluster: Cluster, kubelet: Kubelet, s3: Any, output: str, name: str,
                                           job: str) -> tuple[str, dict]:
    """SIGKILL rank 1 of FineTuneJob `name` once a checkpoint is complete; the uid of its Job
    `job` before the kill, and the killed pod."""
    def first_checkpoint() -> bool:
        return any(k.endswith("manifest.json") for k in list_keys(s3, f"{key_of(output)}checkpoints/"))

    wait_for(first_checkpoint, timeout=TRAIN_TIMEOUT, interval=0.02, what="the first complete checkpoint")
    job_uid = cluster.job(job)["metadata"]["uid"]
    rank1 = next(p for p in trainer_pods(cluster, name)
                 if p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == "1")
    os.kill(kubelet.pid(rank1["metadata"]["name"]), signal.SIGKILL)
    assert not list_keys(s3, f"{key_of(output)}results.json"), "training ended before the kill: make it longer"
    return job_uid, rank1


@pytest.mark.plays_controllers
def test_a_failed_rank_restarts_the_whole_group_from_the_checkpoint(cluster: Cluster, operator: OperatorProcess,
                                                                     kubelet: Kubelet, s3: Any, tiny_bert_s3: str,
                                                                     s3_secret: str) -> None:
    """Issue 9: rank 1 of two is killed; the Job fails as a whole (FailJob), the operator
    deletes it and re-creates it, and both ranks resume from the newest checkpoint: attempts 2."""
    train = upload_jsonl(s3, f"data/{cluster.ns}/train.jsonl", classification_rows(400, seed=9))
    output = submit(cluster, s3, "group", model=tiny_bert_s3, train=train, max_steps=200, save_every=4, secret=s3_secret,
                    nodes=2, env={"OMP_NUM_THREADS": "1"})

    first_job_uid, _ = kill_rank_1_after_the_first_checkpoint(cluster, kubelet, s3, output, "group", "group-trainer")

    status = cluster.wait_phase("group", "Succeeded", timeout=2 * TRAIN_TIMEOUT)
    assert status["attempts"] == 2, status
    job = cluster.job("group-trainer")
    assert job["metadata"]["uid"] != first_job_uid  # a new Job: the whole group restarted
    assert job["status"]["succeeded"] == 2 and "failed" not in job["status"]
    pods = sorted(trainer_pods(cluster, "group"), key=lambda p: p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"])
    assert [p["metadata"]["ownerReferences"][0]["uid"] for p in pods] == [job["metadata"]["uid"]] * 2  # the old Job's pods are gone
    assert f"resumed from {output}checkpoints/step-" in kubelet.log(pods[0]["metadata"]["name"])
    cluster.wait_events("group", {"GroupRestart", "Retrying", "Succeeded"})


# --- the kubelet on its own: plain processes, no operator, a second each --------------------


def plain_job(name: str, script: str, **spec: Any) -> dict:
    """A Job whose container is a Python one-liner (the local install stands in for the image)."""
    container = {
        "name": "main", "image": "python", "command": [sys.executable, "-c", script],
        "env": [
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s3-credentials", "key": "AWS_ACCESS_KEY_ID"}}},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "PORT", "value": "9400"},
            {"name": "CONFIG", "value": "/etc/app/settings.txt"},
        ],
        "ports": [{"name": "metrics", "containerPort": 9400}],
        "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "labels": {"tuneloop.dev/finetunejob": name}},
        "spec": {"backoffLimit": 0, **spec, "template": {"metadata": {"labels": {"tuneloop.dev/finetunejob": name}}, "spec": {
            "restartPolicy": "Never", "terminationGracePeriodSeconds": 5, "containers": [container],
            "volumes": [{"name": "config", "configMap": {"name": "app"}}]}}},
    }


@pytest.fixture
def plain(cluster: Cluster, kubelet: Kubelet, s3_secret: str) -> Cluster:
    cluster.api.create(resource_path("v1", "configmaps", cluster.ns),
                       {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app"}, "data": {"settings.txt": "hello"}})
    return cluster


def run_job(cluster: Cluster, body: dict) -> None:
    cluster.api.create(resource_path("batch/v1", "jobs", cluster.ns), body)


def wait_job_condition(cluster: Cluster, name: str, type_: str, timeout: float = 20) -> dict:
    return wait_for(lambda: job_condition(cluster, name, type_), timeout=timeout, what=f"Job {name} {type_}")


@pytest.mark.plays_controllers
def test_kubelet_resolves_env_volumes_and_ports_and_reports_like_kubernetes(plain: Cluster, kubelet: Kubelet) -> None:
    script = ("import os; print(os.environ['TOKEN'], os.environ['POD'], os.environ['IP'], os.environ['PORT'], "
              "open(os.environ['CONFIG']).read())")
    run_job(plain, plain_job("echo", script))
    assert wait_job_condition(plain, "echo", "Complete")["reason"] == "CompletionsReached"
    job = plain.job("echo")
    assert job["status"]["succeeded"] == 1 and "active" not in job["status"] and job["status"]["completionTime"]
    assert [c["type"] for c in job["status"]["conditions"]] == ["SuccessCriteriaMet", "Complete"]
    [pod] = trainer_pods(plain, "echo")
    name = pod["metadata"]["name"]
    assert pod["metadata"]["labels"]["batch.kubernetes.io/job-name"] == "echo"
    assert pod["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    assert pod["status"]["phase"] == "Succeeded" and terminated(pod) | {"exitCode": 0, "reason": "Completed"} == terminated(pod)
    host_port = pod["spec"]["containers"][0]["ports"][0]["containerPort"]
    assert host_port != 9400  # pods share the host's network: each Job gets its own port
    assert kubelet.log(name).strip() == f"testing {name} 127.0.0.1 {host_port} hello"


@pytest.mark.plays_controllers
def test_kubelet_retries_up_to_the_backoff_limit_then_fails_the_job(plain: Cluster, kubelet: Kubelet) -> None:
    run_job(plain, plain_job("crash", "import sys; print('boom'); sys.exit(3)", backoffLimit=1))
    failed = wait_job_condition(plain, "crash", "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    assert plain.job("crash")["status"]["failed"] == 2
    pods = trainer_pods(plain, "crash")
    assert len(pods) == 2 and all(terminated(p)["exitCode"] == 3 for p in pods)
    assert terminated(pods[0])["message"].strip() == "boom"  # FallbackToLogsOnError


@pytest.mark.plays_controllers
def test_kubelet_suspend_stops_and_deletes_the_pods_and_resume_starts_anew(plain: Cluster, kubelet: Kubelet) -> None:
    script = ("import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: (print('sigterm', flush=True), sys.exit(75))); "
              "print('up', flush=True); time.sleep(60)")
    run_job(plain, plain_job("nap", script))
    first = wait_for(lambda: [p for p in trainer_pods(plain, "nap") if (p.get("status") or {}).get("phase") == "Running"], what="a running pod")[0]
    wait_for(lambda: "up" in kubelet.log(first["metadata"]["name"]), what="the process to start")
    plain.api.patch(resource_path("batch/v1", "jobs", plain.ns, "nap"), {"spec": {"suspend": True}})
    assert wait_job_condition(plain, "nap", "Suspended")["reason"] == "JobSuspended"
    wait_for(lambda: not trainer_pods(plain, "nap"), what="the pods deleted")
    assert "sigterm" in kubelet.log(first["metadata"]["name"])
    assert "failed" not in plain.job("nap")["status"]  # suspension is not a failure

    plain.api.patch(resource_path("batch/v1", "jobs", plain.ns, "nap"), {"spec": {"suspend": False}})
    second = wait_for(lambda: [p for p in trainer_pods(plain, "nap") if (p.get("status") or {}).get("phase") == "Running"], what="a new pod")[0]
    assert second["metadata"]["name"] != first["metadata"]["name"]
    resumed = next(c for c in plain.job("nap")["status"]["conditions"] if c["type"] == "Suspended")
    assert (resumed["status"], resumed["reason"]) == ("False", "JobResumed")


@pytest.mark.plays_controllers
def test_kubelet_fails_a_job_past_its_active_deadline(plain: Cluster, kubelet: Kubelet) -> None:
    run_job(plain, plain_job("slow", "import time; time.sleep(60)", activeDeadlineSeconds=1))
    assert wait_job_condition(plain, "slow", "Failed")["reason"] == "DeadlineExceeded"
    wait_for(lambda: not trainer_pods(plain, "slow"), what="the pod stopped and deleted")


@pytest.mark.plays_controllers
def test_kubelet_writes_the_interim_condition_before_the_terminal_one(plain: Cluster, kubelet: Kubelet) -> None:
    """As the Job controller of 1.31+: SuccessCriteriaMet alone first, Complete in a later write."""
    run_job(plain, plain_job("steps", "print('done')"))
    seen: list[tuple[str, ...]] = []

    def complete() -> bool:
        conditions = tuple(c["type"] for c in ((plain.job("steps") or {}).get("status") or {}).get("conditions") or ())
        if not seen or seen[-1] != conditions:
            seen.append(conditions)
        return "Complete" in conditions

    wait_for(complete, timeout=20, interval=0.02, what="Job steps Complete")
    assert ("SuccessCriteriaMet",) in seen and seen[-1] == ("SuccessCriteriaMet", "Complete"), seen


@pytest.mark.plays_controllers
def test_a_missing_secret_is_stalled_with_the_kubelets_reason(cluster: Cluster, operator: OperatorProcess, kubelet: Kubelet,
                                                               s3: Any) -> None:
    """Issue 9: a pod that can never start (CreateContainerConfigError) is Stalled, not Starting forever."""
    submit(cluster, s3, "nosecret", model=f"s3://{BUCKET}/models/none/", train=f"s3://{BUCKET}/data/none.jsonl",
           max_steps=1, save_every=1, secret="does-not-exist")
    status = cluster.wait_phase("nosecret", "Pending", reason="CreateContainerConfigError", timeout=30)
    assert 'secret "does-not-exist" not found' in status["message"] and "credentialsSecret" in status["message"]
    assert cluster.condition("nosecret", "Stalled")["status"] == "True"
    assert cluster.wait_event("nosecret", "CreateContainerConfigError")["type"] == "Warning"


@pytest.mark.plays_controllers
def test_kubelet_counts_a_pod_deleted_through_the_api_as_failed(plain: Cluster, kubelet: Kubelet) -> None:
    """Issue 9: the pod is Terminating until its process has stopped, then counted as a
    failure (the job-tracking finalizer of a real cluster), and replaced."""
    script = "import time; print('up', flush=True); time.sleep(60)"
    run_job(plain, plain_job("victim", script, backoffLimit=3))
    first = wait_for(lambda: [p for p in trainer_pods(plain, "victim") if (p.get("status") or {}).get("phase") == "Running"],
                     what="a running pod")[0]
    deleting = plain.api.delete(resource_path("v1", "pods", plain.ns, first["metadata"]["name"]))
    assert deleting["metadata"]["deletionTimestamp"]  # graceful: Terminating, not gone
    wait_for(lambda: (plain.job("victim")["status"] or {}).get("failed") == 1, timeout=20, what="the deleted pod counted")
    wait_for(lambda: [p for p in trainer_pods(plain, "victim") if p["metadata"]["name"] != first["metadata"]["name"]],
             timeout=20, what="a replacement pod")
    assert first["metadata"]["name"] not in {p["metadata"]["name"] for p in trainer_pods(plain, "victim")}


@pytest.mark.plays_controllers
def test_kubelet_resolves_pod_dns_names_only_through_a_selecting_headless_service(plain: Cluster, kubelet: Kubelet) -> None:
    def indexed(name: str) -> dict:
        body = plain_job(name, "import os; print(os.environ['PEER'])", completionMode="Indexed", completions=1, parallelism=1)
        body["spec"]["template"]["spec"]["subdomain"] = "peers"
        body["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "PEER", "value": f"{name}-0.peers"})
        return body

    run_job(plain, indexed("lonely"))
    wait_job_condition(plain, "lonely", "Complete")
    [pod] = trainer_pods(plain, "lonely")
    assert kubelet.log(pod["metadata"]["name"]).strip() == "lonely-0.peers"  # no Service: unresolved

    plain.api.create(resource_path("v1", "services", plain.ns), {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "peers"},
        "spec": {"clusterIP": "None", "selector": {"tuneloop.dev/finetunejob": "found"}, "ports": [{"port": 1}]}})
    run_job(plain, indexed("found"))
    wait_job_condition(plain, "found", "Complete")
    [pod] = trainer_pods(plain, "found")
    assert kubelet.log(pod["metadata"]["name"]).strip() == "127.0.0.1"


@pytest.mark.plays_controllers
def test_an_earlier_jobs_terminating_pod_answers_a_per_finetunejob_selector_not_a_per_job_one(
        plain: Cluster, kubelet: Kubelet) -> None:
    """Issue 9: a Job re-created under its name gives its pods the old pods' hostnames; a
    Service selecting per FineTuneJob (publishNotReadyAddresses) answers with the old pod while
    it terminates, one selecting the Job's uid (what the operator writes) with the new only."""
    def indexed(script: str) -> dict:
        body = plain_job("gen", script, completionMode="Indexed", completions=1, parallelism=1)
        body["spec"]["template"]["spec"].update(subdomain="peers", terminationGracePeriodSeconds=10)
        body["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "PEER", "value": "gen-0.peers"})
        return body

    kubelet.dns_wait = 60  # the new pod waits for its peer's name for as long as the test needs
    plain.api.create(resource_path("v1", "services", plain.ns), {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "peers"},
        "spec": {"clusterIP": "None", "selector": {"tuneloop.dev/finetunejob": "gen"}, "publishNotReadyAddresses": True,
                 "ports": [{"port": 1}]}})
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    run_job(plain, indexed(stubborn))
    [old] = wait_for(lambda: [p for p in trainer_pods(plain, "gen") if (p.get("status") or {}).get("phase") == "Running"],
                     what="the first Job's pod running")
    wait_for(lambda: "up" in kubelet.log(old["metadata"]["name"]), what="its process")
    plain.api.delete(resource_path("batch/v1", "jobs", plain.ns, "gen"))
    wait_for(lambda: plain.job("gen") is None, what="the first Job gone")
    run_job(plain, indexed("import os; print(os.environ['PEER'])"))
    new_uid = plain.job("gen")["metadata"]["uid"]

    def answers() -> set[str]:
        return {p["metadata"]["name"] for p in kubelet.resolve(plain.ns, "gen-0.peers")}

    # The new pod has no IP before it starts: the name answers with the old pod alone, so the
    # new pod, looking up its own name, would reach its predecessor; it waits instead.
    [new] = wait_for(lambda: [p for p in trainer_pods(plain, "gen") if p["metadata"]["name"] != old["metadata"]["name"]],
                     what="the second Job's pod")
    time.sleep(1)  # a few kubelet passes
    assert answers() == {old["metadata"]["name"]}
    assert plain.api.get(resource_path("v1", "pods", plain.ns, old["metadata"]["name"]))["metadata"]["deletionTimestamp"]
    assert plain.api.get(resource_path("v1", "pods", plain.ns, new["metadata"]["name"]))["status"]["phase"] == "Pending"

    plain.api.patch(resource_path("v1", "services", plain.ns, "peers"),
                    {"spec": {"selector": {"batch.kubernetes.io/controller-uid": new_uid}}})
    assert answers() == set()  # the old pod is not this Job's; the new one has no IP yet
    wait_for(lambda: plain.api.get(resource_path("v1", "pods", plain.ns, old["metadata"]["name"])) is not None
             and kubelet.log(new["metadata"]["name"]), what="the new pod started beside the Terminating old one")
    wait_job_condition(plain, "gen", "Complete")
    assert kubelet.log(new["metadata"]["name"]).strip() == "127.0.0.1"


@pytest.mark.plays_controllers
def test_kubelet_reports_a_refused_pod_as_a_failed_create_event_on_the_job(plain: Cluster, kubelet: Kubelet) -> None:
    """Issue 9: admission refuses the pod (no such ServiceAccount); the Job controller makes no
    pod and says why in a FailedCreate Event on the Job, counting repeats, until it is fixed."""
    body = plain_job("robot", "print('ran')")
    body["spec"]["template"]["spec"]["serviceAccountName"] = "robot"
    run_job(plain, body)
    uid = plain.job("robot")["metadata"]["uid"]

    def failed_create() -> dict | None:
        events = plain.api.list(resource_path("v1", "events", plain.ns), fieldSelector=f"involvedObject.uid={uid}")
        return next((e for e in events if e["reason"] == "FailedCreate" and e.get("count", 1) >= 2), None)

    event = wait_for(failed_create, timeout=20, what="a repeated FailedCreate Event on the Job")
    assert event["type"] == "Warning" and event["involvedObject"]["kind"] == "Job"
    assert event["message"].startswith('Error creating: pods "robot-" is forbidden')  # generateName: no name yet
    assert f'error looking up service account {plain.ns}/robot: serviceaccount "robot" not found' in event["message"]
    assert not trainer_pods(plain, "robot")

    plain.api.create(resource_path("v1", "serviceaccounts", plain.ns),
                     {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}})
    wait_job_condition(plain, "robot", "Complete")


@pytest.mark.plays_controllers
def test_pods_the_api_server_refuses_are_stalled_with_the_job_controllers_reason(
        cluster: Cluster, operator: OperatorProcess, kubelet: Kubelet, s3: Any) -> None:
    """Issue 9: a missing ServiceAccount leaves the Job with no pod at all; the FineTuneJob is
    Stalled with the FailedCreate Event's words, not Starting forever, and recovers once fixed."""
    body = {"apiVersion": "tuneloop.dev/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "nosa", "namespace": cluster.ns},
            "spec": {"task": "sequence-classification", "model": {"source": f"s3://{BUCKET}/models/none/"},
                     "dataset": {"train": f"s3://{BUCKET}/data/none.jsonl"}, "output": {"uri": f"s3://{BUCKET}/runs/nosa/"},
                     "training": {"maxSteps": 1}, "resources": {"gpusPerNode": 0, "cpu": "1", "memory": "2Gi"},
                     "storage": {"endpoint": s3.endpoint, "region": "us-east-1", "serviceAccountName": "s3-reader"}}}
    cluster.api.create(cluster.ftj_path(), body)
    status = cluster.wait_phase("nosa", "Pending", reason="FailedCreate", timeout=30)
    assert 'serviceaccount "s3-reader" not found' in status["message"] and "spec.storage.serviceAccountName" in status["message"]
    assert cluster.condition("nosa", "Stalled")["status"] == "True"
    assert cluster.wait_event("nosa", "FailedCreate")["type"] == "Warning"

    cluster.api.create(resource_path("v1", "serviceaccounts", cluster.ns),
                       {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "s3-reader"}})
    wait_for(lambda: cluster.status("nosa").get("reason") != "FailedCreate", timeout=30, what="FailedCreate to clear")
    assert trainer_pods(cluster, "nosa")


@pytest.mark.plays_controllers
@pytest.mark.parametrize("policy", ["TerminatingOrFailed", "Failed"])
def test_kubelet_replaces_a_terminating_pod_as_its_pod_replacement_policy_says(plain: Cluster, kubelet: Kubelet,
                                                                               policy: str) -> None:
    """Issue 9: TerminatingOrFailed (the default without a podFailurePolicy) replaces a pod being
    deleted at once, beside it; Failed (the default with one, as the operator's Jobs) waits."""
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    run_job(plain, plain_job("swap", stubborn, backoffLimit=3, podReplacementPolicy=policy,
                             **({"podFailurePolicy": {"rules": []}} if policy == "Failed" else {})))
    [first] = wait_for(lambda: [p for p in trainer_pods(plain, "swap") if (p.get("status") or {}).get("phase") == "Running"],
                       what="a running pod")
    wait_for(lambda: "up" in kubelet.log(first["metadata"]["name"]), what="its process")
    plain.api.delete(resource_path("v1", "pods", plain.ns, first["metadata"]["name"]))  # Terminating for its 5 s grace

    def replacement() -> list[dict]:
        return [p for p in trainer_pods(plain, "swap") if p["metadata"]["name"] != first["metadata"]["name"]]

    if policy == "TerminatingOrFailed":
        wait_for(replacement, timeout=4, what="a replacement beside the Terminating pod")
        assert plain.api.get(resource_path("v1", "pods", plain.ns, first["metadata"]["name"]))["metadata"]["deletionTimestamp"]
        wait_for(lambda: (plain.job("swap")["status"] or {}).get("terminating") == 1, timeout=4, what="status.terminating")
    else:
        time.sleep(2.5)
        assert not replacement(), "replaced before the old pod ended"
        assert plain.job("swap")["status"].get("terminating") == 1
        wait_for(replacement, timeout=15, what="a replacement once the old pod has ended")
        assert plain.api.get(resource_path("v1", "pods", plain.ns, first["metadata"]["name"])) is None


@pytest.fixture
def jobset_crd(cluster: Cluster) -> None:
    """JobSet's own CRD (tests/operator/fixtures), served by the emulator like any CRD."""
    path = Path(__file__).resolve().parents[1] / "operator" / "fixtures" / "jobset.x-k8s.io_jobsets.yaml.gz"
    try:
        cluster.api.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", yaml.safe_load(gzip.decompress(path.read_bytes())))
    except ApiError as exc:
        if exc.status != 409:
            raise
    wait_for(lambda: cluster.api.get("/apis/jobset.x-k8s.io/v1alpha2"), timeout=30, what="the JobSet API")


@pytest.mark.plays_controllers
def test_a_failed_rank_restarts_the_whole_group_through_jobset(cluster: Cluster, operator: OperatorProcess, kubelet: Kubelet,
                                                               jobset_crd: None, s3: Any, tiny_bert_s3: str,
                                                               s3_secret: str) -> None:
    """Issue 9 item 1, runPolicy.groupRestart: JobSet: rank 1 of two is killed; the child Job
    fails as a whole, the JobSet controller restarts the group (restarts 1), both ranks resume
    from the newest checkpoint, and the FineTuneJob says attempts 2."""
    train = upload_jsonl(s3, f"data/{cluster.ns}/train.jsonl", classification_rows(400, seed=9))
    output = submit(cluster, s3, "jsg", model=tiny_bert_s3, train=train, max_steps=200, save_every=4, secret=s3_secret,
                    nodes=2, env={"OMP_NUM_THREADS": "1"}, groupRestart="JobSet")
    jobset_path = resource_path("jobset.x-k8s.io/v1alpha2", "jobsets", cluster.ns, "jsg-trainer")
    jobset = wait_for(lambda: cluster.api.get(jobset_path), what="the JobSet")
    assert jobset["metadata"]["ownerReferences"][0]["name"] == "jsg" and cluster.job("jsg-trainer") is None

    first_job_uid, rank1 = kill_rank_1_after_the_first_checkpoint(cluster, kubelet, s3, output, "jsg", "jsg-trainer-node-0")
    assert rank1["spec"]["hostname"] == "jsg-trainer-node-0-1" and rank1["spec"]["subdomain"] == "jsg-trainer"

    status = cluster.wait_phase("jsg", "Succeeded", timeout=2 * TRAIN_TIMEOUT)
    assert status["attempts"] == 2, status
    # The JobSet controller marks it Completed in its pass after the child Job's Complete.
    def completed() -> dict | None:
        js = cluster.api.get(jobset_path)
        conditions = (js.get("status") or {}).get("conditions") or ()
        return js if any(c["type"] == "Completed" and c["status"] == "True" for c in conditions) else None

    jobset = wait_for(completed, what="the JobSet Completed")
    assert (jobset["status"]["restarts"], jobset["status"]["restartsCountTowardsMax"]) == (1, 1)
    job = cluster.job("jsg-trainer-node-0")
    assert job["metadata"]["uid"] != first_job_uid  # JobSet re-created it: the whole group restarted
    assert job["metadata"]["labels"]["jobset.sigs.k8s.io/restart-attempt"] == "1"
    pods = sorted(trainer_pods(cluster, "jsg"), key=lambda p: p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"])
    assert [p["metadata"]["ownerReferences"][0]["uid"] for p in pods] == [job["metadata"]["uid"]] * 2
    assert f"resumed from {output}checkpoints/step-" in kubelet.log(pods[0]["metadata"]["name"])
    cluster.wait_events("jsg", {"Retrying", "Succeeded"})
