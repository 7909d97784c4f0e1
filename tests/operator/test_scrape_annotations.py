"""Training pods carry the `prometheus.io/*` annotations naming the port the trainer serves on."""

from __future__ import annotations

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.operator.builders import Owner, TrainerDefaults, build_trainer_job

SPEC = {"task": "causal-lm-sft", "model": {"source": "s3://m/x"}, "dataset": {"train": "s3://d/t.jsonl"}, "output": {"uri": "s3://o/run"}}


def test_trainer_pods_are_annotated_for_scraping_on_the_metrics_port() -> None:
    job = build_trainer_job(Owner("ft", "ml", "uid-1"), FineTuneJobSpec.from_dict(SPEC), TrainerDefaults(metrics_port=9555))
    template = job["spec"]["template"]
    (container,) = template["spec"]["containers"]
    metrics_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "metrics")
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert template["metadata"]["annotations"] == {"prometheus.io/scrape": "true", "prometheus.io/port": "9555",
                                                   "prometheus.io/path": "/metrics"}
    assert metrics_port == 9555 and env["TUNELOOP_METRICS_PORT"] == "9555"  # the annotation names the port it serves on
