"""Pure builders of a search's children: each trial's ConfigMap and Job, and the study's records.

A trial is the FineTuneJob's own spec with the trial's params set, `tuning` removed and the
output under `<output>/trials/<N>/` (`tuneloop.tuning.space.trial_spec`), built by the very
builders of a plain FineTuneJob (`build_children`) under the name `<name>-t<N>`: the ConfigMap
`<name>-t<N>-config` and the Job `<name>-t<N>-trainer`, so a trial's pods are exactly a normal
job's pods (security context, podFailurePolicy, termination message, metrics port).

The study itself is one ConfigMap, `<name>-study`, holding the trial records as JSON (see
`tuneloop.tuning.study` for why records, and docs/hyperparameter-search.md for why here).
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.api.typed import Problem
from tuneloop.operator.builders import DNS_LABEL_MAX, Owner, TrainerDefaults, _metadata, build_children, check_names
from tuneloop.tuning.space import trial_spec
from tuneloop.tuning.study import TrialRecord

LABEL_TRIAL = "tuneloop.dev/trial"
# On a FineTuneJob that searches: params ({path: value}, JSON) its first trial tries. The
# MaintenancePolicy controller sets the champion's best params here, so that a retrain searches
# around the champion's settings (issue 14); the search checks them against its own space.
ANNOTATION_ENQUEUE = "tuneloop.dev/enqueue-params"
STUDY_KEY = "trials.json"


def trial_name(name: str, number: int) -> str:
    return f"{name}-t{number}"


def study_config_map_name(name: str) -> str:
    return f"{name}-study"


def trial_owner(owner: Owner, number: int) -> Owner:
    return Owner(owner.name, owner.namespace, owner.uid, children=trial_name(owner.name, number))


def check_trial_names(name: str, spec: FineTuneJobSpec) -> list[Problem]:
    """The longest trial's children must still be valid names (found before anything runs)."""
    assert spec.tuning is not None
    longest = trial_name(name, spec.tuning.trials - 1)
    if check_names(longest, spec):
        room = DNS_LABEL_MAX - (len(longest) - len(name)) - len("-trainer") - (
            len(f"-{spec.resources.nodes - 1}") if spec.resources.nodes > 1 else 0)
        return [Problem("metadata.name", f"is too long for a search of {spec.tuning.trials} trials: at most {room} "
                                         f"characters (trial pods are named {longest}-trainer-...)")]
    return []


def build_trial_spec(spec: FineTuneJobSpec, number: int, params: Mapping[str, Any]) -> FineTuneJobSpec:
    """The typed spec trial `number` trains (the checks made sure every value a trial can get parses)."""
    return FineTuneJobSpec.from_dict(trial_spec(spec.to_dict(), number, dict(params)))


def build_trial_children(owner: Owner, spec: FineTuneJobSpec, number: int, params: Mapping[str, Any],
                         defaults: TrainerDefaults = TrainerDefaults()) -> list[dict[str, Any]]:
    """Trial `number`'s children in creation order (the Job last), labelled with the trial."""
    children = build_children(trial_owner(owner, number), build_trial_spec(spec, number, params), defaults)
    for child in children:
        child["metadata"]["labels"][LABEL_TRIAL] = str(number)
    return children


def build_study_config_map(owner: Owner, records: list[TrialRecord]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(owner, study_config_map_name(owner.name), "study"),
        "data": study_data(records),
    }


def study_data(records: list[TrialRecord]) -> dict[str, str]:
    """The ConfigMap's data: one JSON document, trials in number order (diffable, readable)."""
    body = [r.to_json() for r in sorted(records, key=lambda r: r.number)]
    return {STUDY_KEY: json.dumps(body, indent=1, sort_keys=True)}


def records_of(config_map: Mapping[str, Any] | None) -> list[TrialRecord] | None:
    """The records a study ConfigMap holds; None when there is none yet. A ConfigMap that does
    not parse raises ValueError: the study must never silently restart from nothing."""
    if config_map is None:
        return None
    text = (config_map.get("data") or {}).get(STUDY_KEY)
    if text is None:
        return []
    return [TrialRecord.from_json(item) for item in json.loads(text)]
