"""What an evaluation reports: the task's metrics from summed losses and predictions.

Pure functions, shared by the recipe's evaluation (recipe.py) and `--evaluate-only`; the
recipe gathers the sums and predictions over ranks, this module turns them into numbers.
"""

from __future__ import annotations

import math

DEFAULT_METRIC = "eval_loss"

TASK_METRICS = {
    "causal-lm-sft": ("eval_loss", "perplexity"),
    "sequence-classification": ("eval_loss", "accuracy", "macro_f1"),
    "regression": ("eval_loss", "mse", "mae"),
}


def metric_direction_ok(task: str, metric: str) -> bool:
    """Whether `metric` is one this task reports (early stopping and the policy gate compare it)."""
    return metric in TASK_METRICS[task]


def classification_metrics(preds: list[int], labels: list[int]) -> dict[str, float]:
    """Accuracy and macro-F1 (over the classes present in labels or predictions)."""
    accuracy = sum(p == y for p, y in zip(preds, labels)) / len(labels)
    f1s = []
    for c in sorted(set(labels) | set(preds)):
        tp = sum(p == c and y == c for p, y in zip(preds, labels))
        fp = sum(p == c and y != c for p, y in zip(preds, labels))
        fn = sum(p != c and y == c for p, y in zip(preds, labels))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return {"accuracy": accuracy, "macro_f1": sum(f1s) / len(f1s)}


def task_metrics(task: str, loss: float, preds: list[float], golds: list[float]) -> dict[str, float]:
    """The task's metrics, rounded for logs and status: `loss` is the mean over all targets."""
    if task == "causal-lm-sft":
        result = {"eval_loss": loss, "perplexity": math.exp(min(loss, 50.0))}
    elif task == "regression":
        result = {"eval_loss": loss, "mse": loss, "mae": sum(abs(p - g) for p, g in zip(preds, golds)) / len(golds)}
    else:
        result = {"eval_loss": loss, **classification_metrics(preds, golds)}
    return {k: round(v, 6) for k, v in result.items()}
