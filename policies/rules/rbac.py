"""Kubernetes RBAC: who is bound to the all-powerful roles, and roles that grant too much.

Both rules read Roles, ClusterRoles, RoleBindings and ClusterRoleBindings of every RBAC API version,
their server-side-apply patches (`ClusterRoleBindingPatch`, ...) and the list kinds, whose `items` each
count as one object. Names, verbs and resources are read in any case.

A binding gives a workload identity its role when a subject is a ServiceAccount, the user name of one
(`system:serviceaccount:<ns>:<name>`), or a group of them (`system:serviceaccounts[:<ns>]`); and gives it
to everybody through the `system:authenticated` and `system:unauthenticated` groups and the
`system:anonymous` user. `roleRef` cannot change on a live binding, so a patch that adds such a subject
without naming the role is "cannot verify": the live binding's role decides.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pulumi_policy import EnforcementLevel, Severity

from policies.rules.common import Judge, Rule
from reading import values as v
from reading.resources import Resource
from reading.values import Unknown

RBAC_VERSIONS = ("v1", "v1beta1", "v1alpha1")


def _kinds(*names: str) -> frozenset[str]:
    return frozenset(f"kubernetes:rbac.authorization.k8s.io/{version}:{name}{suffix}"
                     for version in RBAC_VERSIONS for name in names for suffix in ("", "Patch", "List"))


BINDINGS = _kinds("RoleBinding", "ClusterRoleBinding")
ROLES = _kinds("Role", "ClusterRole")
ADMIN_ROLES = ["cluster-admin", "admin", "edit"]
EVERYBODY_GROUPS = frozenset({"system:authenticated", "system:unauthenticated"})
READ_VERBS = frozenset({"get", "list", "watch", "*"})
CORE = frozenset({"", "*"})
RBAC_GROUPS = frozenset({"rbac.authorization.k8s.io", "*"})
IMPERSONATION_GROUPS = frozenset({"", "authentication.k8s.io", "*"})
# Subresources that run commands in a pod, tunnel to its ports past the gateway and the network policy, or
# reach every pod through the kubelet.
EXEC_RESOURCES = ("pods/exec", "pods/attach", "pods/portforward", "nodes/proxy")
_EXEC_WHAT = {"pods/portforward": "any port of any pod, past the network policy",
              "nodes/proxy": "the kubelet API of every node"}
IMPERSONATED = frozenset({"users", "groups", "serviceaccounts", "uids", "userextras/*"})


def objects(resource: Resource) -> Iterator[tuple[str, Any]]:
    """The objects a resource creates or patches: itself, or each item of a list kind."""
    if resource.type.endswith("List"):
        for i, item in enumerate(v.items(resource.props.get("items"))):
            yield f"items[{i}] ", item
    else:
        yield "", resource.props


def _text(value: Any) -> str:
    return str(value).strip().lower()


# --- bindings --------------------------------------------------------------------------------------


def _workload_subject(subject: dict[str, Any]) -> str | None:
    """Why a subject is a workload identity or everybody, or None for people and their groups."""
    kind, name = _text(subject.get("kind", "")), _text(subject.get("name", ""))
    if kind == "serviceaccount":
        namespace = subject.get("namespace")
        return f"service account {namespace + '/' if namespace else ''}{subject.get('name')}"
    if kind == "group" and name in EVERYBODY_GROUPS:
        return f"group {subject.get('name')} (everybody{' signed in' if name == 'system:authenticated' else ''})"
    if kind == "group" and (name == "system:serviceaccounts" or name.startswith("system:serviceaccounts:")):
        return f"group {subject.get('name')} (every service account{' of a namespace' if ':' in name[22:] else ''})"
    if kind == "user" and name == "system:anonymous":
        return "user system:anonymous (every unauthenticated request)"
    if kind == "user" and name.startswith("system:serviceaccount:"):
        return f"user {subject.get('name')} (a service account's user name)"
    return None


def _binding(where: str, obj: dict[str, Any], patch: bool, admin: set[str], judge: Judge) -> None:
    ref = obj.get("roleRef")
    subjects = obj.get("subjects")
    for part, label in ((ref, "roleRef"), (subjects, "subjects")):
        if isinstance(part, Unknown):
            judge.unknown_value(part, f"{where}{label}")
            return
    risky: list[str] = []
    for i, subject in enumerate(v.items(subjects)):
        if isinstance(subject, Unknown):
            judge.unknown_value(subject, f"{where}subjects[{i}]")
        elif isinstance(subject, dict):
            found = {k: subject.get(k) for k in ("kind", "name", "namespace")}
            pending = next((x for x in found.values() if isinstance(x, Unknown)), None)
            if pending is not None:
                judge.unknown_value(pending, f"{where}subjects[{i}]")
                continue
            why = _workload_subject(subject)
            if why is not None:
                risky.append(why)
    if not risky:
        return
    if not isinstance(ref, dict):
        if patch:
            judge.unknown(f"{where}this patch binds {', '.join(risky)} and leaves roleRef to the live binding, which "
                          "the policy cannot see")
        return
    name, kind = ref.get("name"), ref.get("kind")
    for part, label in ((name, "roleRef.name"), (kind, "roleRef.kind")):
        if isinstance(part, Unknown):
            judge.unknown_value(part, f"{where}{label}")
            return
    if isinstance(name, str) and _text(name) in admin and _text(kind or "clusterrole") == "clusterrole":
        reach = ("the whole cluster" if _text(name) == "cluster-admin"
                 else "write access to everything in the namespaces it is bound in")
        judge.violation(f"{where}binds ClusterRole {name} to {', '.join(risky)}, who then get {reach}. Bind a Role "
                        "that lists the verbs and resources the workload uses.")


def check_admin_bindings(resource: Resource, config: dict[str, Any], judge: Judge) -> None:
    admin = {_text(r) for r in config.get("adminRoles") or []}
    patch = resource.type.endswith("Patch")
    for where, obj in objects(resource):
        if isinstance(obj, Unknown):
            judge.unknown_value(obj, where.strip() or "the object")
        elif isinstance(obj, dict):
            _binding(where, obj, patch, admin, judge)


# --- roles -----------------------------------------------------------------------------------------


def _names(value: Any) -> tuple[set[str], Unknown | None]:
    found = v.items(value)
    return {_text(x) for x in found if not isinstance(x, Unknown)}, next(
        (x for x in found if isinstance(x, Unknown)), None)


def _grants(resources: set[str], wanted: str) -> bool:
    """Whether a rule's resources reach `wanted` ("pods/exec"): by name, by "*", or by "pods/*"."""
    base = wanted.split("/", 1)[0]
    return wanted in resources or "*" in resources or f"{base}/*" in resources


def _rule_problems(rule: dict[str, Any], cluster_wide: bool) -> Iterator[str]:
    verbs, _ = _names(rule.get("verbs"))
    groups, _ = _names(rule.get("apiGroups"))
    resources, _ = _names(rule.get("resources"))
    named, _ = _names(rule.get("resourceNames"))
    if "*" in verbs:
        yield "every verb (*), escalate, bind and impersonate included"
    if "*" in resources and groups:
        yield "every resource (*)"
    if not groups:
        return
    core = bool(groups & CORE)
    if (cluster_wide and core and not named and verbs & READ_VERBS and _grants(resources, "secrets")
            and "*" not in resources):
        yield f"{'/'.join(sorted(verbs & READ_VERBS))} on secrets in every namespace"
    if core and verbs:
        for sub in EXEC_RESOURCES:
            if _grants(resources, sub) and "*" not in resources:
                yield f"{sub} ({_EXEC_WHAT.get(sub, 'commands in any pod')})"
    if groups & RBAC_GROUPS and verbs & {"escalate", "bind"} and (
            resources & {"roles", "clusterroles", "*"}):
        yield f"{'/'.join(sorted(verbs & {'escalate', 'bind'}))} on roles (grant more than it holds)"
    if groups & IMPERSONATION_GROUPS and "impersonate" in verbs and (resources & (IMPERSONATED | {"*"})):
        yield "impersonate (act as other users, groups or service accounts)"
    if core and verbs & {"create", "*"} and _grants(resources, "serviceaccounts/token") and "*" not in resources:
        yield "create on serviceaccounts/token (mint any service account's token)"


def _rule_unknowns(rule: dict[str, Any]) -> Unknown | None:
    for key in ("verbs", "apiGroups", "resources", "resourceNames"):
        value = rule.get(key)
        if isinstance(value, Unknown):
            return value
        _, pending = _names(value)
        if pending is not None:
            return pending
    return None


def _role(where: str, obj: dict[str, Any], cluster_wide: bool, judge: Judge) -> None:
    rules = obj.get("rules")
    if isinstance(rules, Unknown):
        judge.unknown_value(rules, f"{where}rules")
        return
    for i, rule in enumerate(v.items(rules)):
        if isinstance(rule, Unknown):
            judge.unknown_value(rule, f"{where}rules[{i}]")
            continue
        if not isinstance(rule, dict):
            continue
        problems = list(_rule_problems(rule, cluster_wide))
        if problems:
            judge.violation(f"{where}rules[{i}] grants {'; '.join(problems)}. List the verbs, resources and (for "
                            "secrets) resourceNames the workload needs, in a namespaced Role.")
        else:
            pending = _rule_unknowns(rule)
            if pending is not None:
                judge.unknown_value(pending, f"{where}rules[{i}]")
    aggregation = obj.get("aggregationRule")
    if isinstance(aggregation, Unknown):
        judge.unknown_value(aggregation, f"{where}aggregationRule")
    elif isinstance(aggregation, dict):
        for i, selector in enumerate(v.items(aggregation.get("clusterRoleSelectors"))):
            if isinstance(selector, Unknown):
                judge.unknown_value(selector, f"{where}aggregationRule.clusterRoleSelectors[{i}]")
            elif isinstance(selector, dict) and not v.items(selector.get("matchLabels")) and not v.items(
                    selector.get("matchExpressions")):
                judge.violation(f"{where}aggregationRule.clusterRoleSelectors[{i}] is empty: it selects every "
                                "ClusterRole, cluster-admin included. Select the roles by a label of your own.")


def check_broad_roles(resource: Resource, config: dict[str, Any], judge: Judge) -> None:
    cluster_wide = ":ClusterRole" in resource.type
    for where, obj in objects(resource):
        if isinstance(obj, Unknown):
            judge.unknown_value(obj, where.strip() or "the object")
        elif isinstance(obj, dict):
            _role(where, obj, cluster_wide, judge)


RBAC_RULES = [
    Rule(
        name="k8s-rbac-no-admin-bindings",
        description="No RoleBinding or ClusterRoleBinding gives cluster-admin, admin or edit to a service "
                    "account, to every service account, or to everybody (system:authenticated, "
                    "system:unauthenticated, system:anonymous).",
        severity=Severity.CRITICAL,
        enforcement=EnforcementLevel.MANDATORY,
        remediation="Bind a namespaced Role with the verbs and resources the workload uses; exempt a cluster "
                    "controller that needs more, with the reason.",
        types=BINDINGS,
        check=check_admin_bindings,
        config={"adminRoles": {
            "type": "array", "items": {"type": "string"}, "default": ADMIN_ROLES,
            "description": "ClusterRoles no workload identity or everybody-group may be bound to."}},
    ),
    Rule(
        name="k8s-rbac-no-broad-roles",
        description="No Role or ClusterRole grants every verb or resource, reads secrets cluster-wide, reaches "
                    "pods/exec, pods/attach, pods/portforward or nodes/proxy, escalates or binds roles, impersonates, "
                    "mints service account tokens, or aggregates every ClusterRole.",
        severity=Severity.HIGH,
        enforcement=EnforcementLevel.MANDATORY,
        remediation="List verbs and resources explicitly; read secrets in a namespaced Role, by resourceNames.",
        types=ROLES,
        check=check_broad_roles,
    ),
]
