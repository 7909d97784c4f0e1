"""An Optuna study driven by ask-and-tell, kept as plain records and rebuilt from them.

Whoever runs the trials (the operator: one child Job each; the local search: one recipe run
after another) drives a `Study`:

    study = Study(tuning, records)           # records: what was persisted; () for a new study
    number, params = study.ask()             # a new trial; persist study.records() before starting it
    prune = study.report(number, step, v)    # an intermediate eval value; stop the trial if True
    study.tell(number, value)                # finished with the objective value
    study.tell(number, state="Failed")       # or "Pruned" (after report said so)
    study.best()                             # the best Complete trial's record, or None

Persistence is plain JSON-able records (`TrialRecord`: number, params, state, value,
intermediate values, Optuna's system attributes), not an Optuna storage: the operator keeps
them in a ConfigMap it owns, and the study is rebuilt from them on every reconcile
(`optuna.trial.create_trial` + `study.add_trial`), so a restarted operator, or a second
reconcile, sees exactly the trials the first one recorded, never asks a finished trial again
and never needs a database. Records are written *before* a trial starts (write-ahead), so a
crash between recording and starting leaves a Running record whose child is simply created.

Reproducibility: the sampler is made afresh for every ask, seeded with `seed + number`, so
trial N's params depend only on the seed, N and the trials recorded before it, whether or not
the study was rebuilt in between (a sampler carried across asks would restart its random
stream on every rebuild). With parallelism > 1 the trials recorded before an ask depend on
which trials finished first, so a parallel search is reproducible only in its first
`parallelism` trials (and entirely with the grid sampler's coverage, not its order).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Literal

import optuna
from optuna.trial import FrozenTrial, TrialState, create_trial

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.api.tuning import TuningSpec
from tuneloop.tuning.space import distributions, grid

State = Literal["Running", "Complete", "Pruned", "Failed"]
FINISHED: tuple[State, ...] = ("Complete", "Pruned", "Failed")
_TO_OPTUNA = {"Running": TrialState.RUNNING, "Complete": TrialState.COMPLETE,
              "Pruned": TrialState.PRUNED, "Failed": TrialState.FAIL}
_FROM_OPTUNA = {v: k for k, v in _TO_OPTUNA.items()}
# The study's name is fixed: Hyperband assigns a trial's bracket by hashing it with the
# trial number, and a rebuilt study must put every trial in the same bracket again.
STUDY_NAME = "tuneloop"

# Optuna logs every trial at INFO; the operator and the trainer log their own lines.
optuna.logging.set_verbosity(optuna.logging.WARNING)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialRecord:
    """One trial, as persisted and shown: everything needed to add it back to a study."""

    number: int
    params: dict[str, Any]
    state: State = "Running"
    value: float | None = None
    intermediate: dict[int, float] = field(default_factory=dict)
    system_attrs: dict[str, Any] = field(default_factory=dict)
    # What the runner attached at tell() (the operator: the trial's final metrics and model URI).
    user_attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def last_step(self) -> int | None:
        return max(self.intermediate) if self.intermediate else None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["intermediate"] = {str(k): v for k, v in sorted(self.intermediate.items())}
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TrialRecord":
        return cls(number=int(data["number"]), params=dict(data["params"]), state=data["state"],
                   value=data.get("value"),
                   intermediate={int(k): float(v) for k, v in (data.get("intermediate") or {}).items()},
                   system_attrs=dict(data.get("system_attrs") or {}), user_attrs=dict(data.get("user_attrs") or {}))


class _AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler without its end-of-grid `study.stop()`: that only works inside
    `study.optimize()` and raises RuntimeError from `tell()` otherwise; with ask-and-tell the
    budget is ours (`Study.can_ask`), and the checks keep trials <= the grid's size."""

    def after_trial(self, study: Any, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        pass


def best_record(records: Iterable[TrialRecord], direction: str) -> TrialRecord | None:
    """The best Complete trial of `records` (ties: the earliest); None when none completed.
    Pruned trials never win: their value is a mid-training evaluation."""
    complete = [r for r in records if r.state == "Complete" and r.value is not None]
    if not complete:
        return None
    sign = 1.0 if direction == "minimize" else -1.0
    return min(complete, key=lambda r: (sign * r.value, r.number))


def make_sampler(tuning: TuningSpec, number: int, spec_cls: type = FineTuneJobSpec) -> optuna.samplers.BaseSampler:
    """The sampler that proposes trial `number` (see the module docstring on seeding)."""
    if tuning.sampler == "grid":
        # The grid's order is one shuffle by the seed, and trial N takes the grid's Nth point:
        # the seed must stay the study's own, or a rebuilt study would map ids to other points.
        return _AskTellGridSampler(grid(tuning, spec_cls), seed=tuning.seed)
    seed = tuning.seed + number
    if tuning.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # Optuna's 10 random start-up trials would make a small search (the usual 8-20 trials)
    # mostly random; a third of the budget explores, the rest is modelled.
    startup = max(1, min(10, tuning.trials // 3))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def make_pruner(tuning: TuningSpec) -> optuna.pruners.BasePruner:
    pruner = tuning.pruner
    if pruner.type == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=pruner.startup_trials, n_warmup_steps=pruner.min_steps)
    if pruner.type == "hyperband":
        # max_resource "auto": the step count of the first finished trial (the operator does not
        # know a job's total steps before its data is read).
        return optuna.pruners.HyperbandPruner(min_resource=max(1, pruner.min_steps), max_resource="auto")
    return optuna.pruners.NopPruner()


class Study:
    """An in-memory Optuna study rebuilt from `records`; see the module docstring."""

    def __init__(self, tuning: TuningSpec, records: Iterable[TrialRecord] = (), spec_cls: type = FineTuneJobSpec):
        self.tuning = tuning
        self.spec_cls = spec_cls
        self.direction = tuning.objective.resolved_direction
        self.distributions = distributions(tuning, spec_cls)
        self.study = optuna.create_study(study_name=STUDY_NAME, direction=self.direction,
                                         sampler=make_sampler(tuning, 0, spec_cls), pruner=make_pruner(tuning))
        for expected, record in enumerate(sorted(records, key=lambda r: r.number)):
            if record.number != expected:
                raise ValueError(f"study records must be numbered 0..n-1 without gaps; trial {expected} is missing")
            self.study.add_trial(self._frozen(record))

    def _frozen(self, record: TrialRecord) -> FrozenTrial:
        value = record.value if record.state in ("Complete", "Pruned") else None
        return create_trial(state=_TO_OPTUNA[record.state], value=value, params=record.params,
                            distributions={p: self.distributions[p] for p in record.params},
                            intermediate_values=record.intermediate, system_attrs=record.system_attrs,
                            user_attrs=record.user_attrs)

    # ------------------------------------------------------------------ reading

    def records(self) -> list[TrialRecord]:
        """Every trial asked so far, as records to persist."""
        out = []
        for t in self.study.get_trials(deepcopy=False):
            out.append(TrialRecord(number=t.number, params=dict(t.params), state=_FROM_OPTUNA.get(t.state, "Running"),
                                   value=t.value, intermediate={int(k): float(v) for k, v in t.intermediate_values.items()},
                                   system_attrs=dict(t.system_attrs), user_attrs=dict(t.user_attrs)))
        return out

    def record(self, number: int) -> TrialRecord:
        return next(r for r in self.records() if r.number == number)

    @property
    def asked(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=None))

    def running(self) -> list[int]:
        return [t.number for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]

    def finished(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)))

    def can_ask(self) -> bool:
        """True while the budget has trials left to start."""
        return self.asked < self.tuning.trials

    @property
    def done(self) -> bool:
        """Every trial of the budget asked and finished."""
        return not self.can_ask() and not self.running()

    def best(self) -> TrialRecord | None:
        """The best Complete trial (ties: the earliest), or None when none completed."""
        return best_record(self.records(), self.direction)

    # ------------------------------------------------------------------ driving

    def enqueue(self, params: dict[str, Any]) -> None:
        """Make the next ask propose `params` (e.g. the champion's): those the search space
        knows with a value inside it; the rest is left to the sampler."""
        known = {k: v for k, v in params.items() if k in self.distributions and self._within(k, v)}
        if known:
            self.study.enqueue_trial(known, skip_if_exists=True)

    def _within(self, path: str, value: Any) -> bool:
        distribution = self.distributions[path]
        try:
            # Optuna's own check (CategoricalDistribution raises for a value not among its choices).
            return bool(distribution._contains(distribution.to_internal_repr(value)))
        except (ValueError, TypeError):
            return False

    def ask(self) -> tuple[int, dict[str, Any]]:
        """A new trial's number and params (keyed by path); its record is Running."""
        if not self.can_ask():
            raise RuntimeError(f"the search's {self.tuning.trials} trials were all asked")
        # A sampler per ask, seeded by the trial's number: see the module docstring.
        self.study.sampler = make_sampler(self.tuning, self.asked, self.spec_cls)
        trial = self.study.ask(self.distributions)
        return trial.number, dict(trial.params)

    def _trial(self, number: int) -> optuna.Trial:
        trial_id = self.study._storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number)
        return optuna.Trial(self.study, trial_id)

    def report(self, number: int, step: int, value: float) -> bool:
        """Record an intermediate eval value of a Running trial; True when it should be pruned.

        A step already reported is not reported again (the operator sees the same evaluation in
        several scrapes); NaN or infinite values are ignored. The answer is the pruner's for the
        trial's values so far, so asking again is harmless.
        """
        record = self.record(number)
        if record.state != "Running":
            return False
        trial = self._trial(number)
        if step not in record.intermediate and math.isfinite(value):
            trial.report(float(value), int(step))
        return trial.should_prune()

    def tell(self, number: int, value: float | None = None, state: State = "Complete",
             attrs: dict[str, Any] | None = None) -> TrialRecord:
        """Finish a trial: Complete with its objective value, Pruned or Failed; `attrs` (JSON
        values) are kept with it as `user_attrs` (e.g. its final metrics and model URI).

        A Complete trial without a finite value is Failed (the trainer did not report the
        metric). Telling a finished trial again changes nothing.
        """
        record = self.record(number)
        if record.finished:
            return record
        for key, item in (attrs or {}).items():
            self._trial(number).set_user_attr(key, item)
        if state == "Complete" and (value is None or not math.isfinite(value)):
            log.warning("trial %d finished without a finite objective value (%r); recorded as Failed", number, value)
            state, value = "Failed", None
        if state == "Complete":
            self.study.tell(number, float(value))
        else:
            self.study.tell(number, state=_TO_OPTUNA[state])
        return self.record(number)
