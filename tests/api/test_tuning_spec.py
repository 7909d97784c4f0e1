"""spec.tuning: accepted as documented, refused with the field and the fix (issue 14)."""

from __future__ import annotations

import copy
import pathlib

import pytest
import yaml

from tuneloop.api.tuning import apply_params
from tuneloop.api.validate import validate_manifest
from tuneloop.tuning.space import trial_spec

from support.manifests import finetunejob

BASE = finetunejob(
    "search",
    model={"source": "s3://models/base"},
    dataset={"train": "s3://data/train.jsonl"},
    output={"uri": "s3://out/search"},
    training={"method": "lora", "evalEverySteps": 10},
    tuning={
        "objective": {"metric": "eval_loss", "direction": "minimize"},
        "searchSpace": [
            {"path": "training.learningRate", "low": 1.0e-5, "high": 1.0e-3, "log": True},
            {"path": "training.lora.r", "type": "int", "low": 4, "high": 32},
            {"path": "training.batchSize", "choices": [8, 16]},
        ],
        "trials": 8,
        "parallelism": 2,
        "sampler": "tpe",
        "pruner": {"type": "median", "minSteps": 20},
        "seed": 0,
    },
)


def problems(mutate=None):
    doc = copy.deepcopy(BASE)
    if mutate:
        mutate(doc["spec"])
    return [str(p) for p in validate_manifest(doc).problems]


def entry(spec, i=0):
    return spec["tuning"]["searchSpace"][i]


def test_the_documented_shape_is_accepted():
    assert problems() == []


def test_the_example_is_valid():
    repo = pathlib.Path(__file__).resolve().parents[2]
    for doc in yaml.safe_load_all((repo / "examples" / "finetunejob-tuning.yaml").read_text()):
        assert validate_manifest(doc).problems == [], doc["metadata"]["name"]


CASES = [
    ("a path that does not exist",
     lambda s: entry(s).update(path="training.learningRat"),
     "spec.tuning.searchSpace[0].path: 'training.learningRat' does not exist: training has no field 'learningRat'"),
    ("a path outside training and dataset",
     lambda s: entry(s).update(path="output.uri"),
     "spec.tuning.searchSpace[0].path: 'output.uri' is outside what a trial may change"),
    ("a path to an object",
     lambda s: entry(s).update(path="training.lora", low=None, high=None, log=None) or entry(s).clear() or entry(s).update(path="training.lora", choices=[1]),
     "spec.tuning.searchSpace[0].path: 'training.lora' is not a single value"),
    ("a range on a categorical field",
     lambda s: entry(s).update(path="training.scheduler", low=1, high=2, log=False),
     "spec.tuning.searchSpace[0].low: training.scheduler takes one of linear, cosine, constant: a range does not apply"),
    ("a range beside choices",
     lambda s: entry(s, 2).update(low=1, high=2),
     "spec.tuning.searchSpace[2]: give either choices or a range (low and high)"),
    ("low >= high",
     lambda s: entry(s).update(low=1e-3, high=1e-5),
     "spec.tuning.searchSpace[0].high: high must be greater than low"),
    ("log with low <= 0",
     lambda s: entry(s).update(path="training.weightDecay", low=0, high=0.1),
     "spec.tuning.searchSpace[0].low: must be > 0 on a log scale, got 0.0"),
    ("int bounds asked for on a float field",
     lambda s: entry(s).update(type="int", low=1, high=5, log=False),
     "spec.tuning.searchSpace[0].type: training.learningRate is a number field, not int; list whole values as choices"),
    ("a fractional bound on an integer field",
     lambda s: entry(s, 1).update(low=4.5),
     "spec.tuning.searchSpace[1].low: 4.5 is not a whole number; training.lora.r is an integer field"),
    ("more parallelism than trials",
     lambda s: s["tuning"].update(parallelism=9),
     "spec.tuning.parallelism: parallelism must be at most trials"),
    ("grid with a float range without step",
     lambda s: s["tuning"].update(sampler="grid"),
     "spec.tuning.searchSpace[0].step: is required with sampler grid"),
    ("a choice of the wrong type",
     lambda s: entry(s, 2).update(choices=[8, "sixteen"]),
     "spec.tuning.searchSpace[2].choices[1]: 'sixteen' does not fit training.batchSize; use a int value"),
    ("a metric the task does not report",
     lambda s: s["tuning"]["objective"].update(metric="perplexity", direction=None) or s["tuning"]["objective"].pop("direction"),
     "spec.tuning.objective.metric: 'perplexity' is not reported on eval for sequence-classification"),
    ("the wrong direction for the metric",
     lambda s: s["tuning"]["objective"].update(direction="maximize"),
     "spec.tuning.objective.direction: eval_loss improves when it goes down; set direction: minimize"),
    ("pruning without evaluations",
     lambda s: s["training"].pop("evalEverySteps"),
     "spec.tuning.pruner.type: median pruning compares evaluations during training; set training.evalEverySteps or pruner.type: none"),
    ("a trial value the CRD refuses",
     lambda s: entry(s).update(high=5.0),
     "spec.tuning.searchSpace[0]: a trial with training.learningRate=5.0 would be refused: spec.training.learningRate: 5.0 is too large; must be <= 1"),
    ("a trial spec the cross-field rules refuse",
     lambda s: s["training"].update(method="full"),
     "spec.tuning.searchSpace[1]: a trial with training.lora.r=4 would be refused: spec.training.lora: training.lora is set but training.method is not lora"),
    ("the same path twice",
     lambda s: s["tuning"]["searchSpace"].append({"path": "training.batchSize", "choices": [4]}),
     "spec.tuning.searchSpace[3]"),
]


@pytest.mark.parametrize("mutate, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_tuning_is_refused_naming_the_field(mutate, expected):
    def clean(spec):
        mutate(spec)
        for item in spec["tuning"]["searchSpace"]:
            for key in [k for k, v in item.items() if v is None]:
                del item[key]
    found = problems(clean)
    assert any(p.startswith(expected) for p in found), found


def test_grid_larger_budget_than_grid_is_refused():
    def grid(spec):
        spec["tuning"].update(sampler="grid", trials=8)
        spec["tuning"]["searchSpace"] = [{"path": "training.batchSize", "choices": [8, 16]},
                                         {"path": "training.lora.r", "low": 4, "high": 8, "step": 4}]
    assert problems(grid) == ["spec.tuning.trials: 8 is more than the grid's 4 combinations; lower it to 4"]


def test_tuning_is_immutable():
    old = copy.deepcopy(BASE)
    new = copy.deepcopy(BASE)
    new["spec"]["tuning"]["trials"] = 9
    found = [str(p) for p in validate_manifest(new, old=old).problems]
    assert any(p.startswith("spec.tuning: tuning is immutable") for p in found), found


def test_a_policy_template_may_carry_tuning():
    repo = pathlib.Path(__file__).resolve().parents[2]
    policy = yaml.safe_load((repo / "examples" / "maintenancepolicy.yaml").read_text())
    policy["spec"]["jobTemplate"]["spec"]["training"]["evalEverySteps"] = 10
    policy["spec"]["jobTemplate"]["spec"]["tuning"] = {
        "objective": {"metric": "eval_loss"},
        "searchSpace": [{"path": "training.learningRate", "low": 1e-5, "high": 1e-3, "log": True}],
        "trials": 4, "parallelism": 2}
    assert validate_manifest(policy).problems == []
    policy["spec"]["jobTemplate"]["spec"]["tuning"]["parallelism"] = 5
    assert [str(p) for p in validate_manifest(policy).problems] == [
        "spec.jobTemplate.spec.tuning.parallelism: parallelism must be at most trials"]


def test_apply_params_sets_paths_creating_objects_and_drops_tuning():
    spec = copy.deepcopy(BASE["spec"])
    del spec["training"]["method"]
    out = apply_params(spec, {"training.lora.r": 8, "training.learningRate": 1e-4})
    assert "tuning" not in out and "tuning" in spec
    assert out["training"]["lora"] == {"r": 8} and out["training"]["learningRate"] == 1e-4
    assert spec["training"] == {"evalEverySteps": 10}  # the job's own spec is untouched


def test_trial_spec_writes_under_the_trials_prefix():
    out = trial_spec(BASE["spec"], 3, {"training.batchSize": 16})
    assert out["output"]["uri"] == "s3://out/search/trials/3/"
    assert out["training"]["batchSize"] == 16 and "tuning" not in out
