"""The errors of the API, shaped as kube-apiserver sends them.

kmock renders every `kmock.KubernetesError` as a `Status` body (kind, code, reason,
message, details); these helpers only choose the `reason`, `message` and `details` the way
the real server words them, because clients branch on them: kopf on the code, code using
the kubernetes client on `reason` (`AlreadyExists` vs `Conflict` are both 409).
"""

from __future__ import annotations

from typing import Any

import kmock

NOT_FOUND_MESSAGE = "the server could not find the requested resource"
STALE_MESSAGE = "the object has been modified; please apply your changes to the latest version and try again"


def qualified_name(resource: kmock.resource) -> str:
    """`pods` for the core group, `finetunejobs.tuneloop.dev` for others (as in messages)."""
    return f"{resource.plural}.{resource.group}" if resource.group else str(resource.plural)


def _details(resource: kmock.resource, name: str | None) -> dict[str, Any]:
    details: dict[str, Any] = {"group": resource.group, "kind": resource.plural}
    if name:
        details["name"] = name
    return details


def resource_not_found() -> kmock.KubernetesError:
    return kmock.KubernetesError(status=404, reason="NotFound", message=NOT_FOUND_MESSAGE, details={})


def not_found(resource: kmock.resource, name: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(
        status=404, reason="NotFound",
        message=f'{qualified_name(resource)} "{name}" not found',
        details=_details(resource, name),
    )


def already_exists(resource: kmock.resource, name: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(
        status=409, reason="AlreadyExists",
        message=f'{qualified_name(resource)} "{name}" already exists',
        details=_details(resource, name),
    )


def conflict(resource: kmock.resource, name: str, why: str = STALE_MESSAGE) -> kmock.KubernetesError:
    return kmock.KubernetesError(
        status=409, reason="Conflict",
        message=f'Operation cannot be fulfilled on {qualified_name(resource)} "{name}": {why}',
        details=_details(resource, name),
    )


def invalid(resource: kmock.resource, name: str, causes: list[str], kind: str | None = None) -> kmock.KubernetesError:
    # The real server names the kind here: `FineTuneJob.tuneloop.dev "x" is invalid: ...`.
    what = (f"{kind}.{resource.group}" if resource.group else kind) if kind else qualified_name(resource)
    return kmock.KubernetesError(
        status=422, reason="Invalid",
        message=f'{what} "{name}" is invalid: {"; ".join(causes)}',
        details={**_details(resource, name), "causes": [{"message": cause} for cause in causes]},
    )


def bad_request(message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=400, reason="BadRequest", message=message, details={})


def forbidden(message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=403, reason="Forbidden", message=message, details={})


def method_not_allowed(message: str = "the server does not allow this method on the requested resource") -> kmock.KubernetesError:
    return kmock.KubernetesError(status=405, reason="MethodNotAllowed", message=message, details={})


def unsupported_media_type(content_type: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(
        status=415, reason="UnsupportedMediaType",
        message=f"the body of the request was in an unknown format - accepted media types include: "
                f"application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
                f" (got {content_type})",
        details={},
    )


def expired_status(message: str) -> dict[str, Any]:
    """The `Status` of a watch that asks for history the server no longer keeps (410 Gone).

    Sent as an ERROR event inside a 200 stream, not as an HTTP error: that is how kopf and
    the kubernetes client expect it, and kopf relists when it sees it.
    """
    return {
        "apiVersion": "v1", "kind": "Status", "metadata": {},
        "status": "Failure", "reason": "Expired", "code": 410, "message": message,
    }
