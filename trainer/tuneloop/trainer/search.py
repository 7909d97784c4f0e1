"""Local hyperparameter search: `tuneloop-train --config FILE` whose spec has a `tuning` section.

The same study as the operator runs in a cluster (`tuneloop.tuning.study.Study`: the same
sampler, pruner and per-trial seeds, so the same spec proposes the same first trials), with
the trials run one after another in this process instead of one child Job each:

* trial N trains `tuning.space.trial_spec(spec, N, params)`: the job's spec with the params
  set, `tuning` removed, output under `<output>/trials/<N>/` (checkpoints, final/, results);
* after each validation evaluation the objective's value goes to the study
  (`Study.report`); when the pruner says so the trial stops there (Recipe's `on_evaluate`,
  TrialPruned) and is recorded Pruned;
* a finished trial is told its final validation value (the recipe's `results["validation"]`,
  never the test metrics); a trial whose spec or data is refused (PermanentError) is Failed
  and the search goes on;
* the best Complete trial's final/ and data_report.json are copied to `<output>/final/` and
  `<output>/`, and `<output>/results.json` is its results plus a `tuning` block (best trial,
  value and params, and every trial's row).

The study's records are written to `<output>/trials/study.json` before each trial starts and
after each report, so running the same command again (after a crash or Ctrl-C) rebuilds the
study, skips finished trials and re-runs the interrupted one, which resumes from its own
newest checkpoint. Deliberately not here: parallel trials (that is the operator's job).
"""

from __future__ import annotations

import gc
import json
import tempfile
from pathlib import Path
from typing import Any, Callable

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.api.validate import parse_spec
from tuneloop.trainer.config import PermanentError, RuntimeSettings
from tuneloop.trainer.metrics import TrainerMetrics
from tuneloop.trainer.storage import Storage, open_storage

STUDY_KEY = "trials/study.json"


def trials_table(study: Any) -> list[dict[str, Any]]:
    """One compact row per trial, as status.tuning.trials shows them in a cluster."""
    return [{"number": r.number, "state": r.state, "value": r.value, "step": r.last_step, "params": r.params}
            for r in study.records()]


class LocalSearch:
    def __init__(self, spec: FineTuneJobSpec, settings: RuntimeSettings, metrics: TrainerMetrics,
                 log: Callable[[str], None] = print):
        from tuneloop.tuning.study import Study, TrialRecord

        assert spec.tuning is not None
        if spec.dataset.validation is None and spec.dataset.split.validation <= 0:
            raise PermanentError("tuning compares trials on validation data; give dataset.validation or "
                                 "dataset.split.validation > 0")
        self.spec, self.settings, self.metrics, self._log = spec, settings, metrics, log
        self.tuning = spec.tuning
        self.metric = self.tuning.objective.metric
        self.is_main = not settings.rank
        self.output: Storage = open_storage(spec.output.uri, settings)
        records = [TrialRecord.from_json(r) for r in self.read_records()]
        self.study = Study(self.tuning, records)
        if records:
            self.log(f"resuming the search: {self.study.finished()} of {self.tuning.trials} trials finished")
        self.errors: dict[int, str] = {}

    def log(self, message: str) -> None:
        if self.is_main:
            self._log(f"tuneloop-train: search: {message}")

    def read_records(self) -> list[dict[str, Any]]:
        if STUDY_KEY not in self.output.list(STUDY_KEY):
            return []
        return json.loads(self.output.read_bytes(STUDY_KEY))["trials"]

    def save(self) -> None:
        if self.is_main:
            body = {"objective": {"metric": self.metric, "direction": self.study.direction},
                    "trials": [r.to_json() for r in self.study.records()]}
            self.output.write_bytes(STUDY_KEY, json.dumps(body, indent=1).encode())

    # ------------------------------------------------------------------ the search

    def run(self) -> dict[str, Any]:
        while True:
            interrupted = self.study.running()  # by an earlier run of this command: run it again, it resumes
            if interrupted:
                number, params = interrupted[0], self.study.record(interrupted[0]).params
            elif self.study.can_ask():
                number, params = self.study.ask()
                self.save()  # write-ahead: a crash from here on re-runs this trial
            else:
                break
            self.run_trial(number, params)
            self.save()
        return self.publish_best()

    def run_trial(self, number: int, params: dict[str, Any]) -> None:
        from tuneloop.tuning.space import trial_spec
        from tuneloop.trainer.recipe import Recipe, TrialPruned

        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
        self.log(f"trial {number} of {self.tuning.trials}: {shown}")
        spec, problems = parse_spec("FineTuneJob", trial_spec(self.spec.to_dict(), number, params))
        if problems:
            return self.failed(number, "; ".join(map(str, problems)))

        def on_evaluate(step: int, result: dict[str, float]) -> bool:
            value = result.get(self.metric)
            prune = value is not None and self.study.report(number, step, value)
            self.save()
            return prune

        def log(line: str) -> None:
            self._log(line.replace("tuneloop-train: ", f"tuneloop-train: trial {number}: ", 1))

        recipe = Recipe(spec, self.settings, metrics=self.metrics, log=log, on_evaluate=on_evaluate)
        try:
            recipe.setup()
            results = recipe.train()
        except TrialPruned as e:
            self.study.tell(number, state="Pruned")
            self.log(f"trial {number} {e} ({self.metric} {self.study.record(number).value:.4g})")
            return
        except PermanentError as e:
            return self.failed(number, str(e))
        finally:
            recipe.cleanup()
            del recipe
            reset_accelerate()
        value = (results.get("validation") or {}).get(self.metric)
        if value is not None:
            # As the operator does: the final value is also the last intermediate one, so the
            # pruner (and Hyperband's max_resource "auto") know how far a finished trial went.
            self.study.report(number, results["step"], value)
        record = self.study.tell(number, value, attrs={"final": results["final_model"], "metrics": results.get("validation")})
        if record.state == "Complete":
            self.log(f"trial {number} finished: {self.metric} {value:.4g}")
        else:
            self.errors[number] = f"no validation {self.metric} was reported"
            self.log(f"trial {number} failed: {self.errors[number]}")

    def failed(self, number: int, error: str) -> None:
        self.study.tell(number, state="Failed")
        self.errors[number] = error
        self.log(f"trial {number} failed: {error}")

    # ------------------------------------------------------------------ the result

    def publish_best(self) -> dict[str, Any]:
        """The best trial's final/ as the run's final/, and results.json naming its params."""
        best = self.study.best()
        if best is None:
            states = ", ".join(f"{r.number} {r.state}" for r in self.study.records())
            first_error = next(iter(self.errors.values()), "")
            raise PermanentError(f"no search trial completed ({states}){': ' + first_error if first_error else ''}")
        prefix = f"trials/{best.number}/"
        results = json.loads(self.output.read_bytes(prefix + "results.json"))
        results["final_model"] = self.output.child("final")
        results["tuning"] = {"metric": self.metric, "direction": self.study.direction, "best_trial": best.number,
                             "best_value": best.value, "best_params": best.params,
                             "trial_model": self.output.child(prefix + "final"), "trials": trials_table(self.study)}
        if self.is_main:
            self.copy(prefix + "final/", "final/")
            self.copy(prefix + "data_report.json", "data_report.json")
            self.output.write_bytes("results.json", json.dumps(results, indent=1).encode())
            self.metrics.set_checkpoint("final", self.output.child("final"))
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items())
        self.log(f"best trial {best.number}: {self.metric} {best.value:.4g} with {shown}; its model is "
                 f"{self.output.child('final')}")
        return results

    def copy(self, source: str, target: str) -> None:
        """Copy a key, or every key under a prefix ending in '/', within the output storage."""
        keys = [k for k in self.output.list(source)] if source.endswith("/") else [source]
        stale = [k for k in self.output.list(target)] if target.endswith("/") else []
        with tempfile.TemporaryDirectory(prefix="tuneloop-best-") as tmp:
            for key in keys:
                name = key[len(source):] if source.endswith("/") else ""
                local = Path(tmp) / "file"
                self.output.download_file(key, local)
                self.output.upload_file(local, target + name)
                if target + name in stale:
                    stale.remove(target + name)
        if stale:  # left by an earlier run with another best trial
            self.output.delete(stale)


def reset_accelerate() -> None:
    """Forget accelerate's process-wide state so the next trial's Accelerator may use another
    precision (a searched training.precision); the process group itself is kept."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    gc.collect()
