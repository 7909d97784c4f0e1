"""`spec.tuning`: a hyperparameter search, typed, checked, and applied to a spec dict.

A FineTuneJob (or a MaintenancePolicy's jobTemplate) with `tuning` runs a study: each trial
is the job's own spec with the searched fields set (`apply_params`) and `tuning` removed.
Search-space paths are dotted camelCase paths below `spec` (`training.learningRate`,
`training.lora.r`), resolved against the typed spec itself (`field_type`), so a path is
valid exactly when the FineTuneJob has that scalar field and a new field becomes searchable
the moment it is added to the spec.

Torch- and Optuna-free on purpose: `tuneloop validate`, the operator and the trainer all check
the same specs with the same words. Optuna distributions are built in `tuneloop.tuning.space`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_origin

from tuneloop.api.typed import Problem, key_of

Direction = Literal["minimize", "maximize"]
# Where a search may reach: what a trial trains on and how. The model, the output, storage,
# resources and the run policy stay the job's own (a trial must not write elsewhere or ask
# for other GPUs than the job was admitted with).
SEARCHABLE_ROOTS = ("training", "dataset")
# The direction each metric the trainer reports improves in; the default of objective.direction.
METRIC_DIRECTIONS: dict[str, Direction] = {
    "eval_loss": "minimize", "perplexity": "minimize", "mse": "minimize", "mae": "minimize",
    "accuracy": "maximize", "macro_f1": "maximize",
}
MAX_GRID_POINTS = 10_000


# finetunejob.opt/req, repeated: finetunejob.py imports this module (FineTuneJobSpec.tuning).
def _opt(default: Any = None, help: str = "") -> Any:
    if callable(default):
        return field(default_factory=tuple if default is list else default, metadata={"help": help})
    return field(default=default, metadata={"help": help})


def _req(help: str) -> Any:
    return field(metadata={"help": help})


@dataclass(frozen=True, kw_only=True)
class ObjectiveSpec:
    metric: str = _req("Validation metric the search optimises, as the trainer reports it on eval "
                       "(eval_loss, perplexity, accuracy, macro_f1, mse, mae).")
    direction: Direction | None = _opt(None, "minimize or maximize; the metric's own direction when absent.")

    @property
    def resolved_direction(self) -> Direction:
        return self.direction or METRIC_DIRECTIONS.get(self.metric, "minimize")


@dataclass(frozen=True, kw_only=True)
class SearchParam:
    path: str = _req("Spec field to search, dotted below spec, e.g. training.learningRate or training.lora.r.")
    type: Literal["int", "float"] | None = _opt(None, "Range type; the field's own type when absent (int fields take int ranges).")
    low: float | None = _opt(None, "Lower bound of a range (inclusive).")
    high: float | None = _opt(None, "Upper bound of a range (inclusive).")
    log: bool = _opt(False, "Sample the range on a log scale (low must be > 0).")
    step: float | None = _opt(None, "Spacing of a range's values; needed for a float range with sampler grid.")
    choices: list[Any] | None = _opt(None, "Values to choose from, instead of a range (strings, numbers or booleans).")

    @property
    def is_categorical(self) -> bool:
        return self.choices is not None


@dataclass(frozen=True, kw_only=True)
class PrunerSpec:
    type: Literal["median", "hyperband", "none"] = _opt("median", "Stop trials whose intermediate evaluations are "
                                                                  "worse than the others' at the same step.")
    min_steps: int = _opt(0, "Optimizer steps a trial trains before it may be pruned.")
    startup_trials: int = _opt(2, "median: trials that finish before any is pruned.")


@dataclass(frozen=True, kw_only=True)
class TuningSpec:
    objective: ObjectiveSpec = _req("What the search optimises.")
    search_space: list[SearchParam] = _req("Fields to search and their ranges or choices.")
    trials: int = _opt(8, "Trials (training runs) in the search.")
    parallelism: int = _opt(1, "Trials training at once (each is one child Job).")
    sampler: Literal["tpe", "random", "grid"] = _opt("tpe", "Optuna sampler: tpe, random, or grid (every combination).")
    pruner: PrunerSpec = _opt(PrunerSpec, "Early stopping of unpromising trials; needs training.evalEverySteps unless none.")
    seed: int = _opt(0, "Seed of the sampler: the same seed proposes the same first trials.")


# ------------------------------------------------------------------ paths and values


def _unwrap(tp: Any) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def field_type(spec_cls: type, path: str) -> tuple[Any | None, str]:
    """The type of the field at `path` below `spec_cls`, or (None, why not)."""
    cls: Any = spec_cls
    parts = path.split(".")
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(cls):
            return None, f"{'.'.join(parts[:i])} is not an object"
        fields = {key_of(f): f for f in dataclasses.fields(cls)}
        if part not in fields:
            where = ".".join(parts[:i]) or "spec"
            return None, f"{where} has no field {part!r}; known fields: {', '.join(sorted(fields))}"
        cls = _unwrap(typing.get_type_hints(cls)[fields[part].name])
    return cls, ""


def value_kind(tp: Any) -> str | None:
    """'int', 'float', 'bool', 'str' or 'enum' for a searchable leaf type; None otherwise."""
    if get_origin(tp) is Literal:
        return "enum"
    return {int: "int", float: "float", bool: "bool", str: "str"}.get(tp)


def _fits(value: Any, tp: Any) -> bool:
    kind = value_kind(tp)
    if kind == "enum":
        return value in get_args(tp)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, str)


def apply_params(spec: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """A copy of a spec dict with each `path -> value` set and `tuning` removed: a trial's spec.

    Missing objects on the way are created (`training.lora.r` on a spec without `lora`), so the
    trial gets the field's defaults for everything else, exactly as if the user had written it.
    """
    out = copy.deepcopy(spec)
    out.pop("tuning", None)
    for path, value in params.items():
        node = out
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def range_values(param: SearchParam, kind: str) -> list[Any] | None:
    """Every value of a stepped range (int ranges step 1 by default); None for a continuous one."""
    if param.is_categorical:
        return list(param.choices or ())
    if param.low is None or param.high is None:
        return None
    if kind == "int":
        step = int(param.step or 1)
        return list(range(int(param.low), int(param.high) + 1, step))
    if param.step is None:
        return None
    count = int(math.floor((param.high - param.low) / param.step + 1e-9)) + 1
    return [round(param.low + i * param.step, 12) for i in range(count)]


def param_kind(spec_cls: type, param: SearchParam) -> str | None:
    """'int' or 'float' for a range, 'categorical' for choices; None when the path is unusable."""
    tp, _ = field_type(spec_cls, param.path)
    if tp is None:
        return None
    if param.is_categorical:
        return "categorical"
    return param.type or value_kind(tp)


# ------------------------------------------------------------------ checks


def _check_param(spec_cls: type, param: SearchParam, sampler: str, at: str) -> list[Problem]:
    problems: list[Problem] = []
    root = param.path.split(".")[0]
    if root not in SEARCHABLE_ROOTS:
        return [Problem(f"{at}.path", f"{param.path!r} is outside what a trial may change; "
                                      f"search fields under {' or '.join(SEARCHABLE_ROOTS)}")]
    tp, why = field_type(spec_cls, param.path)
    if tp is None:
        return [Problem(f"{at}.path", f"{param.path!r} does not exist: {why}")]
    kind = value_kind(tp)
    if kind is None:
        return [Problem(f"{at}.path", f"{param.path!r} is not a single value (an object or a list); search one of its fields")]
    ranged = [name for name, v in (("low", param.low), ("high", param.high), ("step", param.step), ("type", param.type)) if v is not None]
    if param.log:
        ranged.append("log")
    if param.is_categorical:
        if ranged:
            problems.append(Problem(f"{at}.{ranged[0]}", f"a categorical (choices) takes no {', '.join(ranged)}; "
                                                         "give either choices or low/high"))
        choices = list(param.choices or ())
        if not choices:
            problems.append(Problem(f"{at}.choices", "must list at least one value"))
        for i, value in enumerate(choices):
            if not _fits(value, tp):
                allowed = f"one of {', '.join(map(str, get_args(tp)))}" if kind == "enum" else f"a {kind} value"
                problems.append(Problem(f"{at}.choices[{i}]", f"{value!r} does not fit {param.path}; use {allowed}"))
        if len({repr(c) for c in choices}) != len(choices):
            problems.append(Problem(f"{at}.choices", "lists a value twice"))
        return problems
    if kind not in ("int", "float"):
        what = f"one of {', '.join(map(str, get_args(tp)))}" if kind == "enum" else f"{kind} values"
        return [Problem(f"{at}.low", f"{param.path} takes {what}: a range does not apply; list the values as choices")]
    if param.low is None or param.high is None:
        return [Problem(f"{at}.{'low' if param.low is None else 'high'}", "is required for a range (or give choices instead)")]
    if param.type is not None and param.type != kind:
        fix = ("list whole values as choices, e.g. choices: [1, 2, 3]" if kind == "float"
               else "an integer field takes an int range; drop type or set type: int")
        problems.append(Problem(f"{at}.type", f"{param.path} is a {'number' if kind == 'float' else 'integer'} field, "
                                              f"not {param.type}; {fix}"))
        return problems
    if kind == "int":
        for name in ("low", "high", "step"):
            value = getattr(param, name)
            if value is not None and not float(value).is_integer():
                problems.append(Problem(f"{at}.{name}", f"{value} is not a whole number; {param.path} is an integer field"))
    if param.low >= param.high:
        problems.append(Problem(f"{at}.high", f"must be greater than low ({param.low} >= {param.high}); "
                                              "for a single value, set the field itself and leave it out of the search"))
    if param.log and param.low <= 0:
        problems.append(Problem(f"{at}.low", f"must be > 0 on a log scale, got {param.low}"))
    if param.step is not None and param.step <= 0:
        problems.append(Problem(f"{at}.step", f"must be > 0, got {param.step}"))
    if param.log and param.step is not None and not (kind == "int" and param.step == 1):
        # Optuna's distributions refuse both (FloatDistribution; IntDistribution with step != 1).
        problems.append(Problem(f"{at}.step", "cannot be combined with log: true; drop one of them"))
    if sampler == "grid" and kind == "float" and param.step is None:
        problems.append(Problem(f"{at}.step", "is required with sampler grid: a float range has no grid; "
                                              "give a step or list the values as choices"))
    return problems


def check_tuning(spec: Any, task: str, metrics_by_task: dict[str, set[str]]) -> list[Problem]:
    """Every meaning-level problem of `spec.tuning` (spec: a parsed FineTuneJobSpec)."""
    tuning: TuningSpec | None = spec.tuning
    if tuning is None:
        return []
    spec_cls = type(spec)
    problems: list[Problem] = []
    allowed = metrics_by_task[task]
    metric = tuning.objective.metric
    if metric not in allowed:
        problems.append(Problem("spec.tuning.objective.metric",
                                f"{metric!r} is not reported on eval for {task}; use one of: {', '.join(sorted(allowed))}"))
    elif tuning.objective.direction not in (None, METRIC_DIRECTIONS[metric]):
        problems.append(Problem("spec.tuning.objective.direction",
                                f"{metric} improves when it goes {'down' if METRIC_DIRECTIONS[metric] == 'minimize' else 'up'}; "
                                f"set direction: {METRIC_DIRECTIONS[metric]} or leave it out"))
    if not tuning.search_space:
        problems.append(Problem("spec.tuning.searchSpace", "must list at least one field to search"))
    seen: dict[str, int] = {}
    for i, param in enumerate(tuning.search_space):
        at = f"spec.tuning.searchSpace[{i}]"
        if param.path in seen:
            problems.append(Problem(f"{at}.path", f"{param.path} is already searched by searchSpace[{seen[param.path]}]"))
            continue
        seen[param.path] = i
        problems += _check_param(spec_cls, param, tuning.sampler, at)
    if tuning.parallelism > tuning.trials:
        problems.append(Problem("spec.tuning.parallelism",
                                f"{tuning.parallelism} trials at once is more than the {tuning.trials} trials; "
                                f"lower it to at most {tuning.trials}"))
    if tuning.pruner.type != "none" and spec.training.eval_every_steps is None:
        problems.append(Problem("spec.tuning.pruner.type",
                                f"{tuning.pruner.type} pruning compares evaluations during training; "
                                "set training.evalEverySteps or pruner.type: none"))
    if tuning.sampler == "grid" and not problems:
        size = grid_size(spec_cls, tuning)
        if size < tuning.trials:
            problems.append(Problem("spec.tuning.trials", f"{tuning.trials} is more than the grid's {size} combinations; "
                                                          f"lower it to {size}"))
    return problems


def grid_size(spec_cls: type, tuning: TuningSpec) -> int:
    size = 1
    for param in tuning.search_space:
        values = range_values(param, param_kind(spec_cls, param) or "float") or []
        size = min(size * max(len(values), 1), MAX_GRID_POINTS + 1)
    return size


def corner_params(spec_cls: type, tuning: TuningSpec) -> list[tuple[int, dict[str, Any]]]:
    """(searchSpace index, one-field params) for each end of each range and each choice: the
    trials whose specs are checked up front, so a value a trial could get that the rest of
    the spec refuses (training.lora.r while method is full) is reported before any Job runs."""
    out: list[tuple[int, dict[str, Any]]] = []
    for i, param in enumerate(tuning.search_space):
        kind = param_kind(spec_cls, param)
        if param.is_categorical:
            values = list(param.choices or ())
        elif kind == "int":
            values = [int(param.low), int(param.high)]
        else:
            values = [param.low, param.high]
        out += [(i, {param.path: v}) for v in values]
    return out
