"""A MaintenancePolicy whose template searches (issue 14), end to end: every retrain is a
search, and a retrain's first trial is the champion's best params.

The setting of test_policy_loop.py (its fixtures are reused): the real operator, the local
kubelet running the real trainer for every trial and evaluation, moto's S3.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from e2e import test_policy_loop as loop
from e2e.harness import Cluster, OperatorProcess
from e2e.test_policy_loop import mpol_path, mpol_status, policy, revisions, setup_data, wait_verdict
from tuneloop.emulator.kubelet import Kubelet

pytestmark = [pytest.mark.plays_controllers, pytest.mark.slow]

# The S3 server, tiny model, kubelet (trials and evaluations), operator and Secret fixtures.
s3, tiny_bert_s3, kubelet, policy_operator, s3_secret = (loop.s3, loop.tiny_bert_s3, loop.kubelet, loop.policy_operator,
                                                         loop.s3_secret)
SEARCH = {"objective": {"metric": "eval_loss"}, "trials": 2, "parallelism": 2, "pruner": {"type": "none"}, "seed": 5,
          "searchSpace": [{"path": "training.learningRate", "low": 1e-4, "high": 1e-2, "log": True}]}


def searching(cluster: Cluster, s3: Any, model: str, train: str, fresh: str, secret: str) -> None:
    """test_policy_loop's policy, its template searching (it must search from the first revision on)."""
    created: dict[str, Any] = {}
    api_create = cluster.api.create

    def capture(path: str, body: dict) -> dict:
        created.update(body)
        template = body["spec"]["jobTemplate"]["spec"]
        template["training"].update(maxSteps=30, evalEverySteps=10)
        template["tuning"] = SEARCH
        return api_create(path, body)

    cluster.api.create = capture  # type: ignore[method-assign]
    try:
        policy(cluster, s3, "tickets", model=model, train=train, fresh=fresh, secret=secret,
               triggers={"manual": {}}, guards={"cooldown": "1h"})
    finally:
        cluster.api.create = api_create  # type: ignore[method-assign]
    assert created["spec"]["jobTemplate"]["spec"]["tuning"] == SEARCH


def test_every_retrain_searches_starting_from_the_champions_settings(
        cluster: Cluster, policy_operator: OperatorProcess, kubelet: Kubelet, s3: Any, tiny_bert_s3: str,
        s3_secret: str) -> None:
    train, fresh = setup_data(s3, cluster)
    searching(cluster, s3, tiny_bert_s3, train, fresh, s3_secret)

    # Revision 1 is a search; its best trial's model is the revision's, and it becomes champion.
    r1 = wait_verdict(cluster, "tickets", "r1", timeout=3 * loop.LOOP_TIMEOUT)
    assert r1["verdict"] == "Promoted", r1
    first = cluster.ftj("tickets-r1")
    best = first["status"]["tuning"]
    assert best["progress"] == "2/2" and r1["modelURI"] == first["status"]["checkpoints"]["final"]
    assert r1["modelURI"].endswith(f"/r1/trials/{best['bestTrial']}/final/")

    # A retrain: another search, whose first trial is the champion's best learning rate.
    cluster.api.patch(mpol_path(cluster, "tickets"), {"metadata": {"annotations": {"tuneloop.dev/retrain": "again"}}})
    r2 = wait_verdict(cluster, "tickets", "r2", timeout=3 * loop.LOOP_TIMEOUT)
    second = cluster.ftj("tickets-r2")
    assert json.loads(second["metadata"]["annotations"]["tuneloop.dev/enqueue-params"]) == best["bestParams"]
    trials = second["status"]["tuning"]["trials"]
    assert trials[0]["params"] == best["bestParams"] and trials[1]["params"] != best["bestParams"]
    assert r2["verdict"] in ("Promoted", "Rejected") and revisions(cluster, "tickets") == ["tickets-r1", "tickets-r2"]
    assert mpol_status(cluster, "tickets")["champion"]["revision"] in ("r1", "r2")
