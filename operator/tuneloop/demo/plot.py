"""The demo's picture (matplotlib, no display needed): training loss per revision, and the
watched metric over time with its threshold, the data shift and the promotions marked."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_plot(path: Path, loss: dict[str, list[tuple[float, int, float]]], summary: dict[str, Any]) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for job, series in sorted(loss.items()):
        left.plot([s[1] for s in series], [s[2] for s in series], marker=".", label=job)
    left.set(title="Training loss per revision", xlabel="step", ylabel="train loss")
    left.legend()

    metric, threshold = summary.get("metric", "accuracy"), summary.get("threshold")
    points = [e for e in summary.get("evaluations", ()) if e.get("value") is not None]
    for revision in sorted({e["revision"] for e in points}):
        mine = [e for e in points if e["revision"] == revision]
        right.plot([e["elapsed"] for e in mine], [e["value"] for e in mine], "o-", label=f"scheduled evaluation of {revision}")
    gates = [r for r in summary.get("revisions", ()) if r.get("gateMetric") is not None and r.get("promotedAt")]
    for rev in gates:
        at = rev.get("promotedElapsed")
        if at is None:
            continue
        right.axvline(at, color="green", linestyle=":", alpha=0.7)
        right.plot([at], [rev["gateMetric"]], "g*", markersize=14)
        right.annotate(f"{rev['revision']} promoted ({rev['gateMetric']:.3f})", (at, rev["gateMetric"]),
                       textcoords="offset points", xytext=(5, -15))
    if threshold is not None:
        right.axhline(threshold, color="red", linestyle="--", label=f"threshold {threshold}")
    if summary.get("shiftAt") is not None:
        right.axvline(summary["shiftAt"], color="gray", linestyle="-.", label="shifted tickets arrive")
    right.set(title=f"Watched {metric} over time", xlabel="seconds since start", ylabel=metric, ylim=(0, 1.05))
    right.legend(loc="center right", fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
