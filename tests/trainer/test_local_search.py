"""`tuneloop-train --config` with a `tuning` section: a local search on a tiny model (issue 14).

The study is tuneloop.tuning.study (the operator's); these tests check the trainer's side:
trials run one after another under <output>/trials/<N>/, the pruner stops a bad trial early,
the best trial's model becomes final/, results.json names its params, and running the command
again resumes the study instead of repeating finished trials.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from trainer_testkit import classification_rows, spec_for, write_jsonl
from tuneloop.api.tuning import TuningSpec
from tuneloop.api.typed import from_dict
from tuneloop.tuning.study import Study

GOOD, BAD, OTHER = 3e-3, 1e-7, 1e-3
TUNING = {
    "objective": {"metric": "eval_loss"},
    "searchSpace": [{"path": "training.learningRate", "choices": [GOOD, OTHER, BAD]}],
    "trials": 3,
    "sampler": "grid",
    "pruner": {"type": "median", "startupTrials": 1, "minSteps": 0},
    "seed": 1,
}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def search_spec(tmp_path: Path, tiny_bert: Path) -> dict[str, Any]:
    train = write_jsonl(tmp_path / "train.jsonl", classification_rows(140, seed=9))
    spec = spec_for("sequence-classification", str(tiny_bert), str(train), str(tmp_path / "out"), epochs=2,
                    evalEverySteps=3)
    spec["dataset"]["split"] = {"validation": 0.2, "test": 0.1, "seed": 1}
    spec["tuning"] = TUNING
    return spec


def test_the_trials_are_the_studys_own() -> None:
    """Precondition of the test below: with this seed the grid tries the good rate before the bad one."""
    study = Study(from_dict(TuningSpec, TUNING, "spec.tuning"))
    order = []
    for _ in range(3):
        number, params = study.ask()
        order.append(params["training.learningRate"])
        study.tell(number, 1.0)
    assert order.index(GOOD) < order.index(BAD)


def test_a_local_search_prunes_the_bad_trial_and_the_best_one_is_the_result(
        search_spec: dict[str, Any], tmp_path: Path, run_inprocess: Any) -> None:
    code, out, err = run_inprocess(search_spec)
    assert code == 0, err + out
    output = tmp_path / "out"
    study = json.loads((output / "trials" / "study.json").read_text())
    trials = {t["params"]["training.learningRate"]: t for t in study["trials"]}
    assert sorted(trials) == sorted([GOOD, OTHER, BAD])

    # The learning rate that cannot learn is stopped at its first evaluations, before its last step.
    bad = trials[BAD]
    assert bad["state"] == "Pruned", bad
    total_steps = json.loads((output / "trials" / str(trials[GOOD]["number"]) / "results.json").read_text())["total_steps"]
    assert max(int(s) for s in bad["intermediate"]) < total_steps
    assert not (output / "trials" / str(bad["number"]) / "final").exists()
    assert f"trial {bad['number']} pruned at step" in out

    # Each finished trial trained its own spec under trials/<N>/ and reported its evaluations.
    complete = [t for t in study["trials"] if t["state"] == "Complete"]
    assert trials[GOOD] in complete
    for t in complete:
        trial_results = json.loads((output / "trials" / str(t["number"]) / "results.json").read_text())
        assert t["value"] == trial_results["validation"]["eval_loss"]
        assert len(t["intermediate"]) >= 3
        assert t["intermediate"][str(trial_results["step"])] == t["value"]  # the final value is the last intermediate one
        assert t["user_attrs"]["final"] == trial_results["final_model"]

    # The best Complete trial wins: its model is final/, results.json names its params.
    best = min(complete, key=lambda t: t["value"])
    results = json.loads((output / "results.json").read_text())
    assert results["tuning"]["best_trial"] == best["number"]
    assert results["tuning"]["best_params"] == best["params"]
    assert results["tuning"]["best_value"] == best["value"]
    assert [row["state"] for row in results["tuning"]["trials"]] == [t["state"] for t in study["trials"]]
    assert results["final_model"] == str(output / "final")
    best_final = output / "trials" / str(best["number"]) / "final"
    for name in ("model.safetensors", "config.json", "tuneloop.json"):
        assert digest(output / "final" / name) == digest(best_final / name)
    assert (output / "data_report.json").exists()
    assert f"search: best trial {best['number']} of 3" in out

    # Running the same command again resumes the study: nothing is trained twice.
    code, out, err = run_inprocess(search_spec)
    assert code == 0, err
    assert "resuming the search: 3 of 3 trials finished" in out
    assert "search: trial " not in out  # no trial started
    assert json.loads((output / "results.json").read_text())["tuning"]["best_trial"] == best["number"]


def test_a_search_without_validation_data_is_refused(search_spec: dict[str, Any], run_inprocess: Any) -> None:
    search_spec["dataset"]["split"] = {"validation": 0.0, "test": 0.1}
    code, _, err = run_inprocess(search_spec)
    assert code == 2
    assert "tuning compares trials on validation data; give dataset.validation or dataset.split.validation > 0" in err


def test_failed_trials_are_recorded_and_a_search_with_none_complete_exits_2(
        tmp_path: Path, tiny_llama: Path, run_inprocess: Any) -> None:
    """Every trial asks a Llama for classifier dropout it does not have: each is Failed with the
    trainer's own message, the search goes on to the next, and the command ends with exit 2."""
    from trainer_testkit import sft_rows

    train = write_jsonl(tmp_path / "sft.jsonl", sft_rows(40, seed=3))
    spec = spec_for("causal-lm-sft", str(tiny_llama), str(train), str(tmp_path / "out"), maxSteps=2)
    spec["tuning"] = {"objective": {"metric": "eval_loss"}, "trials": 2, "sampler": "grid", "pruner": {"type": "none"},
                      "searchSpace": [{"path": "training.dropout.classifier", "choices": [0.1, 0.2]}]}
    code, out, err = run_inprocess(spec)
    assert code == 2, err
    assert "no search trial completed (0 Failed, 1 Failed): training.dropout.classifier: llama has no classifier dropout" in err
    assert out.count("has no classifier dropout") == 2  # each trial's own line
    states = [t["state"] for t in json.loads((tmp_path / "out" / "trials" / "study.json").read_text())["trials"]]
    assert states == ["Failed", "Failed"]
