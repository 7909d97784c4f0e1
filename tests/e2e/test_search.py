"""A FineTuneJob with spec.tuning, end to end (issue 14): the real operator runs the study, each
trial a child Job run by the local kubelet as the real `tuneloop-train` against moto's S3.

Same setting as test_full_loop.py (its fixtures are reused): a 2-layer BERT, a few dozen steps.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from e2e import test_full_loop as full_loop
from e2e.harness import Cluster, OperatorProcess
from e2e.test_full_loop import BATCH_SIZE, SEED, TRAIN_TIMEOUT, key_of, terminated, trainer_pods
from trainer_testkit import BUCKET, classification_rows, list_keys, upload_jsonl
from tuneloop.emulator.kubelet import Kubelet

# The S3 server, tiny model, kubelet and S3 Secret fixtures of the full-loop tests.
s3, tiny_bert_s3, kubelet, s3_secret = full_loop.s3, full_loop.tiny_bert_s3, full_loop.kubelet, full_loop.s3_secret
SEARCH_TIMEOUT = 2 * TRAIN_TIMEOUT  # four short trainings, two at a time, on a shared machine


def search_spec(s3: Any, cluster: Cluster, *, model: str, train: str, secret: str, name: str, **tuning: Any) -> dict:
    return {
        "task": "sequence-classification",
        "model": {"source": model},
        "dataset": {"train": train},
        "output": {"uri": f"s3://{BUCKET}/runs/{cluster.ns}/{name}/"},
        "training": {"maxSteps": 12, "batchSize": BATCH_SIZE, "maxSeqLength": 16, "learningRate": 3e-3, "seed": SEED,
                     "evalEverySteps": 4},
        "resources": {"gpusPerNode": 0, "cpu": "1", "memory": "2Gi"},
        "storage": {"endpoint": s3.endpoint, "region": "us-east-1", "credentialsSecret": {"name": secret}},
        "runPolicy": {"backoffLimit": 0},
        "tuning": {
            "objective": {"metric": "eval_loss"},
            "searchSpace": [{"path": "training.learningRate", "low": 1e-4, "high": 3e-2, "log": True}],
            "trials": 4, "parallelism": 2, "sampler": "tpe", "pruner": {"type": "none"}, "seed": 3,
            **tuning,
        },
    }


def running_at_once(pods: list[dict]) -> int:
    """The most trainer pods whose containers ran at the same moment (from the kubelet's times)."""
    moments = []
    for pod in pods:
        state = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        moments += [(datetime.fromisoformat(state["startedAt"].replace("Z", "+00:00")), 1),
                    (datetime.fromisoformat(state["finishedAt"].replace("Z", "+00:00")), -1)]
    most = now = 0
    for _, delta in sorted(moments, key=lambda m: (m[0], m[1])):  # an end before a start at the same second
        now += delta
        most = max(most, now)
    return most


@pytest.mark.slow
@pytest.mark.plays_controllers
def test_a_search_of_four_trials_two_at_a_time_ends_with_the_best_model(
        cluster: Cluster, operator: OperatorProcess, kubelet: Kubelet, s3: Any, tiny_bert_s3: str, s3_secret: str) -> None:
    train = upload_jsonl(s3, f"data/{cluster.ns}/train.jsonl", classification_rows(160, seed=4))
    spec = search_spec(s3, cluster, model=tiny_bert_s3, train=train, secret=s3_secret, name="search")
    output = spec["output"]["uri"]
    cluster.api.create(cluster.ftj_path(), {"apiVersion": "tuneloop.dev/v1alpha1", "kind": "FineTuneJob",
                                            "metadata": {"name": "search", "namespace": cluster.ns}, "spec": spec})

    running = cluster.wait_phase("search", "Running", timeout=TRAIN_TIMEOUT)
    assert running["tuning"]["trialsTotal"] == 4
    assert cluster.job("search-trainer") is None, "a search trains only its trials"
    status = cluster.wait_phase("search", "Succeeded", timeout=SEARCH_TIMEOUT)

    table = status["tuning"]["trials"]
    assert status["tuning"]["progress"] == "4/4" and [row["number"] for row in table] == [0, 1, 2, 3]
    assert all(row["state"] == "Complete" for row in table), table
    best = min(table, key=lambda row: row["value"])
    assert status["tuning"]["bestTrial"] == best["number"] and status["tuning"]["bestValue"] == best["value"]
    assert status["tuning"]["bestParams"] == best["params"]
    assert len({row["params"]["training.learningRate"] for row in table}) == 4

    # The result is the best trial's model, in S3 under its own prefix.
    final = f"{output}trials/{best['number']}/final/"
    assert status["checkpoints"]["final"] == final
    assert f"{key_of(final)}model.safetensors" in list_keys(s3, key_of(final))
    assert status["metrics"]["eval_loss"] == pytest.approx(best["value"], abs=1e-6)

    # Each trial: its own Job with its own config (the searched value set, tuning removed), at
    # most two training at once, every pod successful.
    for row in table:
        job = cluster.job(f"search-t{row['number']}-trainer")
        assert job is not None and job["metadata"]["labels"]["tuneloop.dev/trial"] == str(row["number"])
        config = cluster.config_map(f"search-t{row['number']}-config")["data"]["config.yaml"]
        assert "tuning" not in config and f"{output}trials/{row['number']}/" in config
        assert str(row["params"]["training.learningRate"])[:6] in config
    pods = [p for n in range(4) for p in trainer_pods(cluster, f"search-t{n}")]
    assert len(pods) == 4 and all(terminated(p)["exitCode"] == 0 for p in pods)
    assert running_at_once(pods) <= 2

    # The study, persisted: the four trials with the values status shows.
    records = json.loads(cluster.config_map("search-study")["data"]["trials.json"])
    assert [(r["number"], r["state"], round(r["value"], 6)) for r in records] == \
        [(row["number"], "Complete", row["value"]) for row in table]
    reasons = cluster.wait_events("search", {"Succeeded"})
    assert reasons.count("TrialStarted") == 4 and reasons.count("TrialSucceeded") == 4 and "Succeeded" in reasons
