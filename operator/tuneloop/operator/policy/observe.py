"""What the policy's rules are told: its revisions, its evaluation runs, Prometheus' answer.

Pure readers (objects in, `decide`'s observation types out) plus the one network call the
controller makes besides the Kubernetes API: an instant query to Prometheus' HTTP API
(`GET /api/v1/query`), with a hard timeout, whose every failure becomes a `Reading` error
(an outage never raises, never retrains: `decide` turns it into Stalled and a backoff).
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any, Iterable, Mapping

import aiohttp

from tuneloop.operator.policy.model import EvaluationRun, Reading, RevisionRun
from tuneloop.operator.scrape import final_report_pending
from tuneloop.operator.status import error_line, pod_problem, pod_rank, trainer_terminated


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or ()
    return any(ref.get("uid") == uid for ref in refs)


def revision_run(ftj: Mapping[str, Any]) -> RevisionRun:
    status = ftj.get("status") or {}
    return RevisionRun(phase=status.get("phase"), model_uri=(status.get("checkpoints") or {}).get("final"),
                       completed=status.get("completionTime"),
                       message=f"{status.get('reason', '')}: {status.get('message', '')}".strip(": "),
                       best_params=(status.get("tuning") or {}).get("bestParams") or None)


def _condition(job: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in (job.get("status") or {}).get("conditions") or ()
                 if c.get("type") == type_ and c.get("status") == "True"), None)


def evaluation_run(job: Mapping[str, Any], pods: Iterable[Mapping[str, Any]], now: datetime) -> EvaluationRun:
    """Running, succeeded with the trainer's report (its termination message), or failed and why."""
    pods = list(pods)
    if _condition(job, "Complete"):
        done = [p for p in pods if (p.get("status") or {}).get("phase") == "Succeeded" and pod_rank(p) == 0]
        message = trainer_terminated(done[-1]).get("message") if done else None
        try:
            report = json.loads(message or "")
        except ValueError:
            report = None
        if isinstance(report, dict) and (isinstance(report.get("models"), list) or isinstance(report.get("objects"), int)):
            return EvaluationRun(succeeded=True, report=report)
        if final_report_pending(job, pods, now):
            return EvaluationRun()  # the pod's final state is a watch event behind the Job's
        return EvaluationRun(failed=True, message="the evaluation finished without a report (termination message)")
    if cond := (_condition(job, "Failed") or _condition(job, "FailureTarget")):
        failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
        problem = pod_problem(failed[-1], now) if failed else None
        detail = problem[1] if problem else error_line(cond.get("message") or "")
        return EvaluationRun(failed=True, message=f"{cond.get('reason', 'Failed')}: {detail}")
    return EvaluationRun()


def parse_query_result(body: Any) -> float:
    """The one number of an instant query's answer; ValueError says what is wrong with it."""
    if not isinstance(body, Mapping) or body.get("status") != "success":
        raise ValueError(f"query failed: {(body or {}).get('errorType', '')} {(body or {}).get('error', body)}".strip())
    data = body.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        raw = result[1]
    elif kind == "vector":
        if not result:
            raise ValueError("the query returned no series (is the metric scraped? is the label selector right?)")
        if len(result) > 1:
            raise ValueError(f"the query returned {len(result)} series; aggregate it to one (e.g. avg(...))")
        raw = result[0]["value"][1]
    else:
        raise ValueError(f"the query returned a {kind}; it must return one number (scalar or one-series vector)")
    value = float(raw)
    if math.isnan(value):
        raise ValueError("the query returned NaN")
    return value


async def query_prometheus(base_url: str, query: str, timeout: float = 5.0) -> Reading:
    """An instant query; never raises: a failure is a Reading with the error."""
    limits = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 2.0))
    try:
        async with aiohttp.ClientSession(timeout=limits) as session:
            async with session.get(base_url.rstrip("/") + "/api/v1/query", params={"query": query}) as response:
                body = await response.json(content_type=None)
        return Reading(value=parse_query_result(body))
    except ValueError as exc:
        return Reading(error=str(exc))
    except Exception as exc:  # noqa: BLE001 - unreachable, timeout, DNS: all one outage to the rules
        return Reading(error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
