"""The MaintenancePolicy `spec` as frozen, typed objects: when to evaluate, retrain, promote.

Schema: `crds/maintenancepolicies.yaml`. `jobTemplate` follows the CronJob convention
(`metadata` for labels/annotations of the FineTuneJobs it creates, `spec` a FineTuneJob spec),
so a policy's jobs can be told apart by label and Argo CD can track them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from tuneloop.api.checks import METRICS_BY_TASK, check_finetunejob, check_uri
from tuneloop.api.finetunejob import FieldMap, FineTuneJobSpec, opt, req
from tuneloop.api.typed import Problem, from_dict, to_dict

DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$")
_CRON_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}


@dataclass(frozen=True, kw_only=True)
class JobTemplateMetadata:
    labels: dict[str, str] = opt(dict, "Labels for the FineTuneJobs this policy creates.")
    annotations: dict[str, str] = opt(dict, "Annotations for the FineTuneJobs this policy creates.")


@dataclass(frozen=True, kw_only=True)
class JobTemplate:
    spec: FineTuneJobSpec = req("The FineTuneJob spec each retraining run uses.")
    metadata: JobTemplateMetadata = opt(JobTemplateMetadata, "Labels and annotations of created jobs.")


@dataclass(frozen=True, kw_only=True)
class EvaluationDataset:
    uri: str = req("Fresh labelled data: an s3:// or local file, prefix or glob.")
    format: Literal["jsonl", "csv", "parquet"] | None = opt(None, "Inferred from the extension when absent.")
    fields: FieldMap = opt(FieldMap, "Column mapping.")


@dataclass(frozen=True, kw_only=True)
class EvaluationSpec:
    dataset: EvaluationDataset = req("Labelled data the champion is scored on.")
    metric: str = req("Metric computed by the evaluation (accuracy, macro_f1, eval_loss, mse, ...).")
    schedule: str | None = opt(None, "Cron schedule of evaluation runs.")
    time_zone: str | None = opt(None, "IANA time zone of the schedule (UTC when absent).")


@dataclass(frozen=True, kw_only=True)
class ScheduleTrigger:
    cron: str = req("Cron schedule that retrains unconditionally.")
    time_zone: str | None = opt(None, "IANA time zone (UTC when absent).")


@dataclass(frozen=True, kw_only=True)
class MetricTrigger:
    source: Literal["prometheus", "evaluation"] = opt("evaluation", "Where the value comes from.")
    query: str | None = opt(None, "PromQL returning one value (source: prometheus).")
    prometheus_url: str | None = opt(None, "Prometheus base URL (source: prometheus).", key="prometheusURL")
    operator: Literal["<", "<=", ">", ">="] = req("Comparison that means 'degraded'.")
    threshold: float = req("Value compared against.")
    for_: str = opt("0s", "How long the condition must hold before retraining.", key="for")


@dataclass(frozen=True, kw_only=True)
class NewDataTrigger:
    uri: str = req("S3 prefix where new labelled data lands.")
    min_objects: int | None = opt(None, "Retrain once this many new objects arrived.")
    min_bytes: int | None = opt(None, "Retrain once this many new bytes arrived.")


@dataclass(frozen=True, kw_only=True)
class ManualTrigger:
    annotation: str = opt("tuneloop.dev/retrain", "Annotation whose new value starts a retraining run.")


@dataclass(frozen=True, kw_only=True)
class TriggersSpec:
    schedule: ScheduleTrigger | None = opt(None, "Retrain on a schedule.")
    metric: MetricTrigger | None = opt(None, "Retrain when a metric crosses a threshold.")
    new_data: NewDataTrigger | None = opt(None, "Retrain when enough new data arrived.")
    manual: ManualTrigger | None = opt(None, "Retrain when an annotation changes.")


@dataclass(frozen=True, kw_only=True)
class GuardsSpec:
    cooldown: str = opt("1h", "Minimum time between two retraining runs.")
    max_concurrent_jobs: int = opt(1, "Retraining runs allowed at once.")
    suspend: bool = opt(False, "Stop triggering (running jobs continue).")


@dataclass(frozen=True, kw_only=True)
class ConfigMapTarget:
    name: str = req("ConfigMap in the policy's namespace.")
    key: str = req("Key that receives the champion's model URI.")


@dataclass(frozen=True, kw_only=True)
class ObjectFieldTarget:
    api_version: str = req("apiVersion of the object, e.g. serving.kserve.io/v1beta1.")
    kind: str = req("Kind of the object, e.g. InferenceService.")
    name: str = req("Name of the object in the policy's namespace.")
    field_path: str = req("Dotted path of the field, e.g. spec.predictor.model.storageUri.")


@dataclass(frozen=True, kw_only=True)
class PromotionTarget:
    type: Literal["Status", "ConfigMap", "ObjectField"] = opt("Status", "Where a promoted model's URI is written.")
    config_map: ConfigMapTarget | None = opt(None, "With type: ConfigMap.")
    object_field: ObjectFieldTarget | None = opt(None, "With type: ObjectField.")


@dataclass(frozen=True, kw_only=True)
class PromotionSpec:
    metric: str = req("Metric compared between challenger and champion.")
    direction: Literal["maximize", "minimize"] = req("Whether higher or lower is better.")
    min_improvement: float = opt(0.0, "Challenger must beat the champion by at least this much.")
    target: PromotionTarget = opt(PromotionTarget, "Where the champion's model URI goes.")


@dataclass(frozen=True, kw_only=True)
class MaintenancePolicySpec:
    model: str = req("Name of the model this policy maintains.")
    job_template: JobTemplate = req("The FineTuneJob each retraining run creates.")
    promotion: PromotionSpec = req("How a retrained model replaces the champion.")
    evaluation: EvaluationSpec | None = opt(None, "How and when the champion is scored on fresh data.")
    triggers: TriggersSpec = opt(TriggersSpec, "What starts a retraining run (any of).")
    guards: GuardsSpec = opt(GuardsSpec, "Limits on retraining.")
    history_limit: int = opt(10, "Past runs kept in status.history.")
    pinned_revision: str | None = opt(None, "Pin the champion to this revision, e.g. r2 (roll back); promotion is held until cleared.")
    adopt_model_uri: str | None = opt(None, "A model already in production that becomes the first champion (r0).", key="adoptModelURI")

    @classmethod
    def from_dict(cls, data: Any, path: str = "spec") -> "MaintenancePolicySpec":
        return from_dict(cls, data, path)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def check_cron(expr: str, path: str) -> list[Problem]:
    """Five fields or a @macro, read by croniter as the controller reads it (schedule.py)."""
    if len(expr.split()) != 5 and expr.strip() not in _CRON_MACROS:
        return [Problem(path, f"{expr!r} is not a cron schedule; write five fields like '0 3 * * *' or @daily")]
    try:
        croniter(expr, datetime(2026, 1, 1)).get_next(datetime)
    except CroniterBadDateError:
        return [Problem(path, f"{expr!r} never fires (no such date); fix the day of month or the month")]
    except (CroniterBadCronError, ValueError) as err:
        return [Problem(path, f"{expr!r} is not a cron schedule ({err}); write five fields like '0 3 * * *' or @daily")]
    return []


def check_time_zone(value: str | None, path: str) -> list[Problem]:
    """An IANA name the operator's zoneinfo knows (a typo would otherwise stall the policy later)."""
    if value is None:
        return []
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return [Problem(path, f"{value!r} is not an IANA time zone; write e.g. Europe/Berlin or UTC")]
    return []


def check_duration(value: str, path: str) -> list[Problem]:
    if not DURATION.match(value):
        return [Problem(path, f"{value!r} is not a duration; write e.g. 30m, 1h or 1h30m")]
    return []


def check_maintenancepolicy(spec: MaintenancePolicySpec, namespace: str | None = None) -> list[Problem]:
    problems = [
        Problem(p.path.replace("spec.", "spec.jobTemplate.spec.", 1), p.message)
        for p in check_finetunejob(spec.job_template.spec, namespace)
    ]
    task = spec.job_template.spec.task
    allowed = METRICS_BY_TASK[task]
    if spec.promotion.metric not in allowed:
        problems.append(
            Problem("spec.promotion.metric", f"{spec.promotion.metric!r} is not computed for {task}; use one of: {', '.join(sorted(allowed))}")
        )
    if spec.evaluation is not None:
        ev = spec.evaluation
        problems += check_uri(ev.dataset.uri, "spec.evaluation.dataset.uri")
        if ev.metric not in allowed:
            problems.append(Problem("spec.evaluation.metric", f"{ev.metric!r} is not computed for {task}; use one of: {', '.join(sorted(allowed))}"))
        if ev.schedule is not None:
            problems += check_cron(ev.schedule, "spec.evaluation.schedule")
        problems += check_time_zone(ev.time_zone, "spec.evaluation.timeZone")
    trig = spec.triggers
    if trig.schedule is not None:
        problems += check_cron(trig.schedule.cron, "spec.triggers.schedule.cron")
        problems += check_time_zone(trig.schedule.time_zone, "spec.triggers.schedule.timeZone")
    if trig.metric is not None:
        m = trig.metric
        problems += check_duration(m.for_, "spec.triggers.metric.for")
        if m.source == "prometheus":
            if not m.query:
                problems.append(Problem("spec.triggers.metric.query", "is required with source: prometheus"))
            if not m.prometheus_url or not re.match(r"^https?://", m.prometheus_url):
                problems.append(Problem("spec.triggers.metric.prometheusURL", "an http(s):// URL is required with source: prometheus"))
        elif spec.evaluation is None:
            problems.append(Problem("spec.triggers.metric", "source: evaluation needs spec.evaluation; add it or use source: prometheus"))
    if trig.new_data is not None:
        problems += check_uri(trig.new_data.uri, "spec.triggers.newData.uri", allow_local=False)
    problems += check_duration(spec.guards.cooldown, "spec.guards.cooldown")
    if spec.adopt_model_uri is not None:
        problems += check_uri(spec.adopt_model_uri, "spec.adoptModelURI")
    if spec.pinned_revision is not None and not re.match(r"^r?[0-9]+$", spec.pinned_revision):
        problems.append(Problem("spec.pinnedRevision", f"{spec.pinned_revision!r} is not a revision; write e.g. r2"))
    target = spec.promotion.target
    if target.type == "ConfigMap" and target.config_map is None:
        problems.append(Problem("spec.promotion.target.configMap", "is required with type: ConfigMap"))
    if target.type == "ObjectField" and target.object_field is None:
        problems.append(Problem("spec.promotion.target.objectField", "is required with type: ObjectField"))
    return problems
