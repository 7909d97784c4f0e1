"""`tuneloop-train --evaluate-only`: score one model, or several on the very same rows.

The MaintenancePolicy's promotion gate needs challenger and champion scored on the same
held-out data in one run (`--model CHALLENGER --model CHAMPION`): each model is evaluated in
turn by `recipe.Evaluation` on the same data URI or the same deterministic split of the
spec's dataset, and the results list them in that order. The operator never reads the
results file (it would need the S3 credentials): the run's report is the termination
message, one JSON line `{"rows": N, "split": ..., "models": [{"model", "rows", "metrics"}]}`.
"""

from __future__ import annotations

import json
import math
from typing import Any, Sequence

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.trainer.config import RuntimeSettings
from tuneloop.trainer.storage import open_storage

REPORT_MAX_BYTES = 3072  # Kubernetes keeps 4096 bytes of a termination message


def evaluate_models(spec: FineTuneJobSpec, settings: RuntimeSettings, metrics: Any, models: Sequence[str | None],
                    data_uri: str | None, split: str, results_uri: str | None) -> dict[str, Any]:
    """Score each model (None: the spec's own final model, as before) on the same rows.

    Returns the first model's results (the single-model shape) plus `models`, every model's.
    """
    from tuneloop.trainer.recipe import Evaluation

    scored: list[dict[str, Any]] = []
    main = None
    for model in models or [None]:
        evaluation = Evaluation(spec, settings, metrics=metrics)
        evaluation.setup(model_uri=model, data_uri=data_uri, split=split)
        result = evaluation.evaluate("test")
        scored.append({"model": evaluation.model_uri, "rows": len(evaluation.examples["test"]), "metrics": result})
        main = main or evaluation
        del evaluation  # one model in memory at a time
    assert main is not None
    results = {"task": spec.task, "model": scored[0]["model"], "split": split, "rows": scored[0]["rows"],
               "metrics": scored[0]["metrics"], "models": scored}
    if main.is_main:
        main.metrics.set_eval(scored[0]["metrics"])
        target = results_uri or main.output.child("evaluation/results.json")
        parent, _, name = target.rpartition("/")
        open_storage(parent or ".", settings).write_bytes(name, json.dumps(results, indent=1).encode())
        results["results_uri"] = target
    return results


def report_line(results: dict[str, Any], max_bytes: int = REPORT_MAX_BYTES) -> str:
    """The termination message: rows and each model's finite metrics, one compact JSON line."""
    def finite(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    report = {"rows": results["rows"], "split": results["split"],
              "models": [{"model": m["model"], "rows": m["rows"],
                          "metrics": {k: v for k, v in m["metrics"].items() if finite(v)}} for m in results["models"]]}
    line = json.dumps(report, separators=(",", ":"))
    if len(line.encode()) > max_bytes:  # long URIs: keep the numbers, drop the model names but the first two
        for m in report["models"][2:]:
            m.pop("model", None)
        line = json.dumps(report, separators=(",", ":"))
    return line
