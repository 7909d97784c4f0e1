"""What a FineTuneJob may ask of the cluster: the operator's allow-lists (issue 13).

Creating a FineTuneJob is as powerful as creating a pod: the trainer pod runs the image the
spec names, as the ServiceAccount it names, at the priority it names. Kubernetes RBAC cannot
see inside the spec, so a cluster admin who lets users create FineTuneJobs but not pods
narrows what they may ask for here. Empty lists allow everything (the default, as before);
see SECURITY.md.

Pure: the settings come from the operator's environment once (OperatorConfig), the check
takes a parsed spec and returns problems, which the handler turns into InvalidSpec.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass

from tuneloop.api.finetunejob import FineTuneJobSpec
from tuneloop.api.typed import Problem

ENV = {
    "images": "TUNELOOP_ALLOWED_IMAGES",
    "service_accounts": "TUNELOOP_ALLOWED_SERVICE_ACCOUNTS",
    "priority_classes": "TUNELOOP_ALLOWED_PRIORITY_CLASSES",
}


@dataclass(frozen=True)
class AllowLists:
    # Shell patterns over the whole image reference, e.g. "registry.corp/ml/*"; end a registry
    # pattern with "/*" so "registry.corp/ml-evil/x" does not match "registry.corp/ml*".
    images: tuple[str, ...] = ()
    service_accounts: tuple[str, ...] = ()
    priority_classes: tuple[str, ...] = ()

    @classmethod
    def from_env(cls) -> "AllowLists":
        def names(var: str) -> tuple[str, ...]:
            return tuple(x.strip() for x in os.environ.get(var, "").split(",") if x.strip())

        return cls(**{field: names(var) for field, var in ENV.items()})


def check_allowed(spec: FineTuneJobSpec, allowed: AllowLists) -> list[Problem]:
    """Problems for each thing the spec asks for that the operator's allow-lists exclude.

    The operator's own trainer image (used when spec.image is absent) is always allowed.
    """
    problems = []
    if spec.image is not None and allowed.images and not any(fnmatch.fnmatchcase(spec.image, p) for p in allowed.images):
        problems.append(Problem("spec.image", f"{spec.image!r} is not allowed by this operator; allowed: "
                                              f"{', '.join(allowed.images)} (or leave it out for the default trainer image)"))
    account = spec.storage.service_account_name
    if account is not None and allowed.service_accounts and account not in allowed.service_accounts:
        problems.append(Problem("spec.storage.serviceAccountName", f"{account!r} is not allowed by this operator; allowed: "
                                                                   f"{', '.join(allowed.service_accounts)}"))
    priority = spec.resources.priority_class_name
    if priority is not None and allowed.priority_classes and priority not in allowed.priority_classes:
        problems.append(Problem("spec.resources.priorityClassName", f"{priority!r} is not allowed by this operator; "
                                                                    f"allowed: {', '.join(allowed.priority_classes)}"))
    return problems
