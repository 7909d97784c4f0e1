"""`spec.tuning.searchSpace` as Optuna distributions, and a trial's spec from its params.

Params are keyed by the search-space path (`training.learningRate`), so a trial's params,
its status row and its rendered spec all read the same. Shared by the operator (one child Job
per trial) and `tuneloop-train --config` (trials one after another): both render a trial with
`trial_spec`, so a trial trains exactly the same config in either place.
"""

from __future__ import annotations

from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.api.tuning import SearchParam, TuningSpec, apply_params, param_kind, range_values

TRIALS_DIR = "trials"


def distribution(param: SearchParam, spec_cls: type = FineTuneJobSpec) -> BaseDistribution:
    """The Optuna distribution of one checked search-space entry (see api.tuning.check_tuning)."""
    kind = param_kind(spec_cls, param)
    if kind == "categorical":
        return CategoricalDistribution(list(param.choices or ()))
    assert param.low is not None and param.high is not None, param
    if kind == "int":
        step = int(param.step or 1)
        return IntDistribution(int(param.low), int(param.high), log=param.log, step=step)
    return FloatDistribution(float(param.low), float(param.high), log=param.log, step=param.step)


def distributions(tuning: TuningSpec, spec_cls: type = FineTuneJobSpec) -> dict[str, BaseDistribution]:
    return {param.path: distribution(param, spec_cls) for param in tuning.search_space}


def grid(tuning: TuningSpec, spec_cls: type = FineTuneJobSpec) -> dict[str, list[Any]]:
    """Every value of every entry, for GridSampler (checks made sure each range has a step)."""
    out = {}
    for param in tuning.search_space:
        values = range_values(param, param_kind(spec_cls, param) or "float")
        assert values is not None, f"{param.path}: a float range needs a step for the grid sampler"
        out[param.path] = values
    return out


def trial_output_uri(output_uri: str, number: int) -> str:
    """`<output>/trials/<N>/`: each trial's checkpoints and final model, beside the job's own."""
    return f"{output_uri.rstrip('/')}/{TRIALS_DIR}/{number}/"


def trial_spec(spec: dict[str, Any], number: int, params: dict[str, Any]) -> dict[str, Any]:
    """The spec dict trial `number` trains: the job's spec with `params` set, `tuning` removed
    and the output under `<output>/trials/<N>/`."""
    out = apply_params(spec, params)
    out["output"] = {**out["output"], "uri": trial_output_uri(spec["output"]["uri"], number)}
    return out
