"""The JobSet builder (issue 9 item 1) against JobSet's own published CRD (fixtures/README.md):
structure (unknown fields refused, as pruning would drop them silently on a real cluster),
enums and CEL rules; and its failure-policy patterns against the child Job's failure
messages as the Job controller words them."""

from __future__ import annotations

import gzip
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.api.schema import apply_defaults, check_cel, check_structure
from tuneloop.emulator.jobcontroller import _failure_action
from tuneloop.operator.builders import DNS_LABEL_MAX, Owner, build_pod_failure_policy, check_names
from tuneloop.operator.jobset import (
    DISRUPTION_PATTERN, FINAL_EXIT_PATTERN, VERSION, build_trainer_jobset, master_addr, pod_hostname,
)

CRD = Path(__file__).parent / "fixtures" / "jobset.x-k8s.io_jobsets.yaml.gz"
OWNER = Owner(name="sft", namespace="ml", uid="uid-1")
BASE = {"task": "causal-lm-sft", "model": {"source": "s3://models/llama"}, "dataset": {"train": "s3://data/train.jsonl"},
        "output": {"uri": "s3://out/sft"}, "resources": {"nodes": 2, "gpusPerNode": 8, "cpu": "32", "memory": "256Gi",
                                                         "ephemeralStorage": "500Gi"}}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    crd = yaml.safe_load(gzip.decompress(CRD.read_bytes()))
    version = next(v for v in crd["spec"]["versions"] if v["name"] == VERSION)
    assert version["served"] and version["storage"]
    return version["schema"]["openAPIV3Schema"]


def spec(**overrides: Any) -> FineTuneJobSpec:
    return FineTuneJobSpec.from_dict({**BASE, **overrides})


@pytest.mark.parametrize("overrides", [
    {},
    {"runPolicy": {"queueName": "team-a", "backoffLimit": 5}},
    {"runPolicy": {"suspend": True, "activeDeadlineSeconds": 3600}},
    {"storage": {"serviceAccountName": "s3-reader"}, "resources": {**BASE["resources"], "nodes": 4,
                                                                   "priorityClassName": "training", "tolerations": [
                                                                       {"key": "nvidia.com/gpu", "operator": "Exists"}]}},
], ids=["plain", "kueue", "suspended", "scheduling"])
def test_the_jobset_is_valid_against_jobsets_own_crd(schema: dict, overrides: dict) -> None:
    jobset = build_trainer_jobset(OWNER, spec(**overrides))
    body = {k: v for k, v in jobset.items() if k != "metadata"}
    defaulted = apply_defaults(schema, body)
    assert check_structure(schema, {**defaulted, "metadata": {}}) == []
    assert check_cel(schema, defaulted) == []


def test_one_replicated_job_of_the_operators_indexed_job() -> None:
    jobset = build_trainer_jobset(OWNER, spec(runPolicy={"backoffLimit": 4, "queueName": "team-a"}))
    assert jobset["metadata"]["name"] == "sft-trainer"
    assert jobset["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert jobset["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert jobset["spec"]["suspend"] is True  # Kueue admits it
    assert jobset["spec"]["failurePolicy"]["maxRestarts"] == 4
    assert jobset["spec"]["network"] == {"enableDNSHostnames": True, "subdomain": "sft-trainer", "publishNotReadyAddresses": True}
    [replicated] = jobset["spec"]["replicatedJobs"]
    job = replicated["template"]["spec"]
    assert (job["completionMode"], job["completions"], job["parallelism"], job["backoffLimit"]) == ("Indexed", 2, 2, 0)
    assert "suspend" not in job and "subdomain" not in job["template"]["spec"]
    env = {e["name"]: e.get("value") for e in job["template"]["spec"]["containers"][0]["env"]}
    # JobSet's hostnames: <jobset>-<replicatedJob>-<jobIndex>-<podIndex>.
    assert env["MASTER_ADDR"] == master_addr("sft") == "sft-trainer-node-0-0.sft-trainer"
    # The longest pod hostname is refused up front, as for the operator's own Job.
    longest = "a" * (DNS_LABEL_MAX - len("-trainer-node-0-1"))
    assert len(pod_hostname(longest, 1)) == DNS_LABEL_MAX
    assert check_names(longest, spec(runPolicy={"groupRestart": "JobSet"})) == []
    assert check_names(longest + "a", spec(runPolicy={"groupRestart": "JobSet"}))[0].path == "metadata.name"
    assert check_names(longest + "a", spec()) == []  # the operator's own hostnames are shorter


def _pod(exit_code: int | None = None, condition: str | None = None) -> dict:
    status: dict[str, Any] = {"phase": "Failed", "conditions": [], "containerStatuses": []}
    if exit_code is not None:
        status["containerStatuses"] = [{"name": "trainer", "state": {"terminated": {"exitCode": exit_code}}}]
    if condition:
        status["conditions"] = [{"type": condition, "status": "True"}]
    return {"metadata": {"namespace": "ml", "name": "sft-trainer-node-0-1-abcde"}, "status": status}


@pytest.mark.parametrize("pod, final, disruption", [
    (_pod(exit_code=2), True, False),
    (_pod(exit_code=3), True, False),
    (_pod(exit_code=1), False, False),
    (_pod(exit_code=137), False, False),
    (_pod(exit_code=143, condition="DisruptionTarget"), False, True),
])
def test_the_failure_policy_reads_the_job_controllers_words(pod: dict, final: bool, disruption: bool) -> None:
    """The child Job fails with the message of the first podFailurePolicy rule that matched
    (the emulator's Job controller words it as kube-controller-manager does)."""
    action, message = _failure_action(build_pod_failure_policy(nodes=2), pod)
    assert action == "FailJob"
    assert bool(re.search(FINAL_EXIT_PATTERN, message)) is final, message
    assert bool(re.search(DISRUPTION_PATTERN, message)) is disruption, message
