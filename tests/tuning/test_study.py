"""The study shared by the operator and the local search (issue 14): pruning, resume after a
rebuild, the best trial, grid coverage. Objectives are cheap functions of the params, so
each test drives a whole study in milliseconds."""

from __future__ import annotations

import itertools
import json
import math

import pytest

from tuneloop.api.tuning import TuningSpec
from tuneloop.api.typed import from_dict
from tuneloop.tuning.study import Study, TrialRecord


def tuning(**over):
    raw = {"objective": {"metric": "eval_loss"},
           "searchSpace": [{"path": "training.learningRate", "low": 1e-5, "high": 1e-1, "log": True},
                           {"path": "training.lora.r", "type": "int", "low": 4, "high": 32},
                           {"path": "training.batchSize", "choices": [8, 16]}],
           "trials": 8, "parallelism": 1, "sampler": "tpe", "pruner": {"type": "median", "startupTrials": 2}, "seed": 0}
    raw.update(over)
    return from_dict(TuningSpec, raw, "spec.tuning")


def loss(params):
    """Best near lr 1e-3, r 16, batch 16."""
    return (math.log10(params["training.learningRate"]) + 3) ** 2 + abs(params["training.lora.r"] - 16) / 16 + \
        (0.0 if params["training.batchSize"] == 16 else 0.1)


def curve(final, steps=(10, 20, 30, 40)):
    """Intermediate eval values falling towards `final`."""
    return [(s, final + 1.0 / s) for s in steps]


def persisted(study):
    """Records the way the operator stores them: through JSON and back."""
    return [TrialRecord.from_json(json.loads(json.dumps(r.to_json()))) for r in study.records()]


def run_trial(study, number, params, final=None):
    final = loss(params) if final is None else final
    for step, value in curve(final):
        if study.report(number, step, value):
            return study.tell(number, state="Pruned")
    return study.tell(number, final)


def test_ask_gives_params_keyed_by_path_within_their_ranges():
    study = Study(tuning())
    number, params = study.ask()
    assert number == 0 and set(params) == {"training.learningRate", "training.lora.r", "training.batchSize"}
    assert 1e-5 <= params["training.learningRate"] <= 1e-1
    assert isinstance(params["training.lora.r"], int) and 4 <= params["training.lora.r"] <= 32
    assert params["training.batchSize"] in (8, 16)
    assert study.records()[0].state == "Running"


def test_pruning_stops_a_bad_trial_and_spares_a_good_one():
    study = Study(tuning(pruner={"type": "median", "startupTrials": 2, "minSteps": 10}))
    for final in (0.5, 0.6):  # two finished trials set the median
        number, params = study.ask()
        run_trial(study, number, params, final)
    bad, _ = study.ask()
    pruned_at = None
    for step, value in [(10, 5.0), (20, 5.0), (30, 5.0)]:
        if study.report(bad, step, value):
            pruned_at = step
            break
    assert pruned_at == 10, "a trial far worse than the median at its first evaluation is pruned"
    assert study.tell(bad, state="Pruned").state == "Pruned"
    good, params = study.ask()
    assert run_trial(study, good, params, 0.4).state == "Complete"
    assert study.best().number == good


def test_no_pruning_before_min_steps_or_startup_trials():
    study = Study(tuning(pruner={"type": "median", "startupTrials": 2, "minSteps": 25}))
    for final in (0.5, 0.6):
        number, params = study.ask()
        run_trial(study, number, params, final)
    bad, _ = study.ask()
    assert not study.report(bad, 10, 5.0) and not study.report(bad, 20, 5.0)
    assert study.report(bad, 30, 5.0)
    fresh = Study(tuning(pruner={"type": "median", "startupTrials": 2}))
    first, _ = fresh.ask()
    assert not fresh.report(first, 10, 100.0), "nothing to compare with yet"


def test_pruner_none_never_prunes():
    study = Study(tuning(pruner={"type": "none"}))
    for final in (0.5, 0.6):
        number, params = study.ask()
        run_trial(study, number, params, final)
    bad, _ = study.ask()
    assert not any(study.report(bad, s, 50.0) for s in (10, 20, 30))


def test_hyperband_pruner_prunes_and_survives_a_rebuild():
    spec = tuning(pruner={"type": "hyperband", "minSteps": 10}, trials=12)
    study = Study(spec)
    outcomes = []
    for i in range(12):
        number, params = study.ask()
        outcomes.append(run_trial(study, number, params, final=0.1 * (i % 4) + (3.0 if i >= 6 else 0.0)).state)
        study = Study(spec, persisted(study))  # rebuilt between every trial, as after restarts
    assert "Pruned" in outcomes and "Complete" in outcomes


def test_rebuilt_study_resumes_without_repeating_finished_trials():
    spec = tuning(trials=8)
    study = Study(spec)
    for _ in range(3):
        number, params = study.ask()
        run_trial(study, number, params)
    running, _ = study.ask()           # asked, then the operator restarts
    study.report(running, 10, 9.0)
    records = persisted(study)

    rebuilt = Study(spec, records)
    assert rebuilt.records() == records, "every trial, its state, value and intermediate values come back"
    assert rebuilt.running() == [running] and rebuilt.finished() == 3
    number, params = rebuilt.ask()
    assert number == 4, "numbers continue; nothing finished is asked again"
    assert params not in [r.params for r in records]
    # The Running trial carries on where it was: reports and tell work on it.
    rebuilt.report(running, 20, 8.0)
    assert rebuilt.tell(running, 0.01).state == "Complete"
    assert rebuilt.record(running).intermediate == {10: 9.0 + 0.0, 20: 8.0}


def test_same_seed_same_search_whether_or_not_rebuilt():
    """Trial N's params depend on the seed, N and the trials before it, not on restarts."""
    spec = tuning(trials=8)

    def drive(rebuild):
        study = Study(spec)
        for _ in range(8):
            number, params = study.ask()
            run_trial(study, number, params)
            if rebuild:
                study = Study(spec, persisted(study))
        return [(r.params, r.state, r.value) for r in study.records()]

    straight = drive(rebuild=False)
    assert drive(rebuild=True) == straight
    assert [p for p, _, _ in drive(rebuild=False)] == [p for p, _, _ in straight]
    other = Study(tuning(trials=8, seed=1)).ask()[1]
    assert other != straight[0][0], "another seed proposes other params"


def test_the_best_complete_trial_wins():
    study = Study(tuning(trials=4, pruner={"type": "none"}))
    finals = [0.9, 0.2, 0.5]
    for final in finals:
        number, params = study.ask()
        run_trial(study, number, params, final)
    number, _ = study.ask()
    study.tell(number, state="Failed")
    best = study.best()
    assert best.number == 1 and best.value == 0.2 and best.state == "Complete"
    assert study.done


def test_maximize_picks_the_highest():
    study = Study(tuning(objective={"metric": "accuracy"}, trials=3, pruner={"type": "none"}))
    for final in (0.7, 0.9, 0.8):
        number, params = study.ask()
        study.tell(number, final)
    assert study.best().value == 0.9


def test_a_pruned_trial_never_wins_even_with_a_better_last_value():
    study = Study(tuning(trials=3, pruner={"type": "none"}))
    a, _ = study.ask()
    study.tell(a, 0.5)
    b, _ = study.ask()
    study.report(b, 10, 0.01)
    study.tell(b, state="Pruned")
    assert study.record(b).value == 0.01  # Optuna keeps the last intermediate value
    assert study.best().number == a


def test_complete_without_a_value_is_failed_and_tell_is_idempotent():
    study = Study(tuning(trials=2))
    number, _ = study.ask()
    assert study.tell(number, None).state == "Failed"
    assert study.tell(number, 0.1).state == "Failed", "a finished trial is not told again"
    other, _ = study.ask()
    assert study.tell(other, float("nan")).state == "Failed"
    assert study.best() is None


def test_reports_of_a_step_already_seen_or_not_finite_are_ignored():
    study = Study(tuning(trials=2))
    number, _ = study.ask()
    study.report(number, 10, 1.0)
    study.report(number, 10, 2.0)
    study.report(number, 20, float("inf"))
    assert study.record(number).intermediate == {10: 1.0}


def test_budget_is_respected():
    study = Study(tuning(trials=2))
    study.ask()
    study.ask()
    assert not study.can_ask()
    with pytest.raises(RuntimeError, match="2 trials were all asked"):
        study.ask()


def test_grid_covers_its_grid_exactly_once_across_rebuilds():
    spec = tuning(sampler="grid", trials=6, pruner={"type": "none"},
                  searchSpace=[{"path": "training.batchSize", "choices": [8, 16]},
                               {"path": "training.warmupRatio", "low": 0.0, "high": 0.2, "step": 0.1}])
    study = Study(spec)
    seen = []
    for _ in range(6):
        number, params = study.ask()
        seen.append((params["training.batchSize"], round(params["training.warmupRatio"], 6)))
        study.tell(number, 0.1 * number)
        study = Study(spec, persisted(study))
    assert sorted(seen) == sorted(itertools.product([8, 16], [0.0, 0.1, 0.2]))


def test_enqueued_params_are_the_next_trial():
    """The champion's settings first (a MaintenancePolicy retrain searches around them)."""
    spec = tuning(trials=4)
    study = Study(spec)
    champion = {"training.learningRate": 2e-4, "training.lora.r": 12, "training.batchSize": 16, "training.other": 1}
    study.enqueue(champion)
    number, params = study.ask()
    assert number == 0 and params == {k: v for k, v in champion.items() if k != "training.other"}
    # Values outside the space are left to the sampler.
    other = Study(spec)
    other.enqueue({"training.batchSize": 12, "training.lora.r": 64, "training.learningRate": 1e-4})
    number, params = other.ask()
    assert params["training.learningRate"] == 1e-4 and params["training.batchSize"] in (8, 16)
    assert 4 <= params["training.lora.r"] <= 32
    # A rebuilt study does not re-enqueue: the enqueued trial is a record like any other.
    rebuilt = Study(spec, persisted(study))
    assert rebuilt.ask()[1] != params


def test_records_must_be_contiguous():
    study = Study(tuning(trials=3))
    study.ask()
    study.ask()
    records = persisted(study)
    with pytest.raises(ValueError, match="trial 0 is missing"):
        Study(tuning(trials=3), records[1:])
