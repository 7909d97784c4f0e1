"""The chart grants exactly the API access the operator's code uses, no more, no less (issue 13).

The verbs are derived from the code, not listed by hand, so a new controller or a new API
call shows up here by itself:

* every kopf handler registered by the operator's modules (indexes, on.*, timers, daemons):
  kopf lists and watches its resource; change handlers and timers/daemons also patch it
  (progress annotations, finalizers) and its `/status` (our `patch.status`);
* every `Kube._request`/`Kube._call(what, METHOD, resource_path(KIND, ...))` call in kube.py:
  the HTTP method gives the verb (GET of a collection: list), the kind (or, for a kind passed
  in, every kind in `kube.CHILD_KINDS`) the resource; the methods in `kube.TARGET_METHODS`
  reach promotion targets of any kind, which the chart's `promotionTargetRules` value grants;
* `update` on the finalizers of our kinds, whose children carry blockOwnerDeletion;
* what kopf itself needs whatever the handlers are (its docs' RBAC example): creating Events,
  the peering objects, and the cluster-wide discovery of CRDs and namespaces.

Unused write access is a risk, not a convenience: `patch configmaps` cluster-wide covers
`kube-system/aws-auth` on EKS, which is a path to cluster-admin.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import kopf

import tuneloop.operator
from tuneloop.operator import kube
from helm.test_chart import by_kind, render

HTTP_VERBS = {"GET": "get", "POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}
# kopf's own needs (https://kopf.readthedocs.io/en/stable/deployment/#rbac): events for handler
# progress and our kopf.event, peering between replicas.
KOPF_NAMESPACED = {("", "events", "create")} | {("kopf.dev", "kopfpeerings", v) for v in ("get", "list", "watch", "patch")}
KOPF_CLUSTER = ({("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")}
                | {("", "namespaces", v) for v in ("list", "watch")}
                | {("kopf.dev", "clusterkopfpeerings", v) for v in ("get", "list", "watch", "patch")})

Rule = tuple[str, str, str]


def kopf_handler_rules() -> set[Rule]:
    for module in pkgutil.walk_packages(tuneloop.operator.__path__, "tuneloop.operator."):
        importlib.import_module(module.name)  # registers every controller's handlers
    registry = kopf.get_default_registry()
    rules: set[Rule] = set()
    for kind, writes in (("_indexing", False), ("_watching", False), ("_changing", True), ("_spawning", True)):
        for handler in getattr(registry, kind).get_all_handlers():
            selector = handler.selector
            group, resource = selector.group or "", selector.plural or selector.any_name
            assert resource, f"handler {handler.id} names no resource plural: {selector}"
            rules |= {(group, resource, "list"), (group, resource, "watch")}
            if writes:
                rules |= {(group, resource, "patch"), (group, f"{resource}/status", "patch")}
                # Our kinds own children with blockOwnerDeletion: true, which needs `update` on
                # the owner's finalizers where OwnerReferencesPermissionEnforcement is on (issue 9).
                rules.add((group, f"{resource}/finalizers", "update"))
    return rules


def kube_call_rules() -> set[Rule]:
    tree = ast.parse(Path(kube.__file__).read_text())
    rules: set[Rule] = set()
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef) or function.name in kube.TARGET_METHODS:
            continue  # promotion targets: granted by the chart's promotionTargetRules value
        for node in ast.walk(function):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("_request", "_call")):
                continue
            if function.name in ("_request", "_call"):
                continue  # the two plumbing methods themselves
            method, path = node.args[1], node.args[2]
            assert isinstance(method, ast.Constant), f"kube.py:{node.lineno}: the HTTP method must be a literal"
            assert isinstance(path, ast.Call) and getattr(path.func, "id", None) == "resource_path", \
                f"kube.py:{node.lineno}: build paths with resource_path(KIND, ...) so this test can read them"
            kind = path.args[0]
            kinds = [kind.value] if isinstance(kind, ast.Constant) else list(kube.CHILD_KINDS)
            # GET of a collection (resource_path without a name) is the `list` verb.
            verb = "list" if method.value == "GET" and len(path.args) < 3 else HTTP_VERBS[method.value]
            subresource = path.args[3].value if len(path.args) > 3 else None  # e.g. "status"
            for k in kinds:
                prefix, plural = kube.PATHS[k]
                group = "" if prefix == "/api/v1" else prefix.split("/")[2]
                rules.add((group, f"{plural}/{subresource}" if subresource else plural, verb))
    return rules


def granted(role: dict) -> set[Rule]:
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


def test_kube_calls_are_read_from_the_code() -> None:
    rules = kube_call_rules()
    assert ("batch", "jobs", "delete") in rules and ("", "configmaps", "create") in rules


def test_namespaced_rules_are_exactly_what_the_code_calls() -> None:
    expected = kopf_handler_rules() | kube_call_rules() | KOPF_NAMESPACED
    roles = {r["metadata"]["name"]: r for r in by_kind(render(), "ClusterRole")}
    actual = granted(roles["tl-tuneloop"])
    assert sorted(actual - expected) == [], "granted but never used by the code: remove from helm/tuneloop/templates/rbac.yaml"
    assert sorted(expected - actual) == [], "used by the code but not granted: add to helm/tuneloop/templates/rbac.yaml"


def test_single_namespace_roles_grant_the_same() -> None:
    expected = kopf_handler_rules() | kube_call_rules() | KOPF_NAMESPACED
    for role in by_kind(render("watchNamespaces={ml-a,ml-b}"), "Role"):
        assert granted(role) == expected


def test_cluster_rules_are_exactly_what_kopf_needs() -> None:
    roles = {r["metadata"]["name"]: r for r in by_kind(render(), "ClusterRole")}
    assert granted(roles["tl-tuneloop-cluster"]) == KOPF_CLUSTER
