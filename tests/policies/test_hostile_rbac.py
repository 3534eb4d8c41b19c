"""Hostile Kubernetes RBAC cases: the all-powerful roles bound to workloads or to everybody in every subject
spelling, roles that grant too much by wildcard, subresource or special verb, patches and lists; and the
look-alikes that must pass (a namespaced read-only role, people bound to admin)."""

from __future__ import annotations

from typing import Any

import pytest
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

from tests.policies.harness import Case, assert_case

BINDINGS, ROLES = "k8s-rbac-no-admin-bindings", "k8s-rbac-no-broad-roles"
RBAC = "kubernetes:rbac.authorization.k8s.io/v1"
CRB, RB = f"{RBAC}:ClusterRoleBinding", f"{RBAC}:RoleBinding"
CR, R = f"{RBAC}:ClusterRole", f"{RBAC}:Role"
SERVING = {"kind": "ServiceAccount", "name": "servestack", "namespace": "servestack"}


def binding(role: str, *subjects: dict[str, Any], kind: str = "ClusterRole") -> dict[str, Any]:
    return {"metadata": {"name": "b", "namespace": "servestack"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
            "subjects": list(subjects)}


def role(*rules: dict[str, Any], namespace: str | None = "servestack", **more: Any) -> dict[str, Any]:
    metadata = {"name": "r", **({"namespace": namespace} if namespace else {})}
    return {"metadata": metadata, "rules": list(rules), **more}


def rule(verbs: list[str], resources: list[str], groups: list[str] | None = None, **more: Any) -> dict[str, Any]:
    return {"apiGroups": [""] if groups is None else groups, "resources": resources, "verbs": verbs, **more}


CASES = [
    # --- bindings ---
    Case("cluster-admin-to-serving-account", BINDINGS, CRB, binding("cluster-admin", SERVING), "violation",
         "service account servestack/servestack"),
    Case("admin-in-namespace", BINDINGS, RB, binding("admin", SERVING), "violation", "ClusterRole admin"),
    Case("edit-to-default-account", BINDINGS, RB, binding("edit", {"kind": "ServiceAccount", "name": "default"}),
         "violation"),
    Case("cluster-admin-to-authenticated", BINDINGS, CRB,
         binding("cluster-admin", {"kind": "Group", "name": "system:authenticated",
                                   "apiGroup": "rbac.authorization.k8s.io"}), "violation", "everybody signed in"),
    Case("edit-to-unauthenticated", BINDINGS, CRB, binding("edit", {"kind": "Group", "name": "system:unauthenticated"}),
         "violation"),
    Case("admin-to-anonymous-user", BINDINGS, CRB, binding("admin", {"kind": "User", "name": "system:anonymous"}),
         "violation"),
    Case("cluster-admin-to-every-service-account", BINDINGS, CRB,
         binding("cluster-admin", {"kind": "Group", "name": "system:serviceaccounts"}), "violation"),
    Case("edit-to-a-namespace-of-service-accounts", BINDINGS, RB,
         binding("edit", {"kind": "Group", "name": "system:serviceaccounts:servestack"}), "violation"),
    Case("cluster-admin-to-service-account-user-name", BINDINGS, CRB,
         binding("cluster-admin", {"kind": "User", "name": "system:serviceaccount:servestack:servestack"}),
         "violation", "a service account's user name"),
    Case("subject-kind-and-role-in-other-case", BINDINGS, CRB,
         binding("Cluster-Admin", {"kind": "serviceaccount", "name": "ci", "namespace": "ci"}), "violation"),
    Case("admin-among-people", BINDINGS, CRB,
         binding("cluster-admin", {"kind": "Group", "name": "platform-admins"}, SERVING), "violation"),
    Case("binding-patch-with-role", BINDINGS, f"{RBAC}:ClusterRoleBindingPatch", binding("cluster-admin", SERVING),
         "violation"),
    Case("binding-patch-adds-account-role-left-out", BINDINGS, f"{RBAC}:RoleBindingPatch",
         {"metadata": {"name": "existing"}, "subjects": [SERVING]}, "unknown", "roleRef"),
    Case("binding-list-item", BINDINGS, f"{RBAC}:ClusterRoleBindingList",
         {"items": [binding("view", SERVING), binding("cluster-admin", SERVING)]}, "violation", "items[1]"),
    Case("binding-v1beta1", BINDINGS, "kubernetes:rbac.authorization.k8s.io/v1beta1:ClusterRoleBinding",
         binding("cluster-admin", SERVING), "violation"),
    Case("binding-subject-unknown", BINDINGS, CRB,
         binding("cluster-admin", {"kind": "ServiceAccount", "name": UNKNOWN_STRING_VALUE, "namespace": "x"}),
         "unknown"),
    Case("binding-role-unknown", BINDINGS, CRB, binding(UNKNOWN_STRING_VALUE, SERVING), "unknown"),
    Case("view-to-serving-account", BINDINGS, RB, binding("view", SERVING), "pass"),
    Case("own-role-named-admin", BINDINGS, RB, binding("admin", SERVING, kind="Role"), "pass"),
    Case("cluster-admin-to-people", BINDINGS, CRB,
         binding("cluster-admin", {"kind": "Group", "name": "platform-admins"},
                 {"kind": "User", "name": "alice@example.com"}), "pass"),
    Case("binding-patch-without-subjects", BINDINGS, f"{RBAC}:ClusterRoleBindingPatch",
         {"metadata": {"name": "existing", "labels": {"team": "ml"}}}, "pass"),
    Case("controller-exempt", BINDINGS, CRB, binding("cluster-admin", SERVING), "pass", "",
         {"exemptions": [{"resource": "subject", "reason": "Argo CD's application controller manages the cluster"}]}),
    # --- roles ---
    Case("every-verb", ROLES, R, role(rule(["*"], ["configmaps"])), "violation", "every verb"),
    Case("every-resource", ROLES, R, role(rule(["get"], ["*"])), "violation", "every resource"),
    Case("every-group-and-resource", ROLES, CR, role(rule(["list"], ["*"], ["*"]), namespace=None), "violation"),
    Case("cluster-wide-secrets-read", ROLES, CR, role(rule(["get", "list"], ["secrets"]), namespace=None),
         "violation", "on secrets in every namespace"),
    Case("cluster-wide-secrets-watch-any-group", ROLES, CR, role(rule(["watch"], ["secrets"], ["*"]), namespace=None),
         "violation"),
    Case("secrets-in-other-case", ROLES, CR, role(rule(["GET"], ["Secrets"]), namespace=None), "violation"),
    Case("pods-exec", ROLES, R, role(rule(["create"], ["pods/exec"])), "violation", "pods/exec"),
    Case("pods-exec-over-websocket-get", ROLES, R, role(rule(["get"], ["pods", "pods/exec"])), "violation"),
    Case("pods-portforward", ROLES, R, role(rule(["create"], ["pods/portforward"])), "violation",
         "pods/portforward"),
    Case("pods-subresource-wildcard", ROLES, R, role(rule(["create"], ["pods/*"])), "violation", "pods/attach"),
    Case("nodes-proxy", ROLES, CR, role(rule(["get"], ["nodes/proxy"]), namespace=None), "violation", "kubelet"),
    Case("escalate-roles", ROLES, CR,
         role(rule(["escalate"], ["clusterroles"], ["rbac.authorization.k8s.io"]), namespace=None), "violation",
         "escalate"),
    Case("bind-roles", ROLES, R, role(rule(["bind"], ["roles"], ["rbac.authorization.k8s.io"])), "violation"),
    Case("impersonate-service-accounts", ROLES, CR, role(rule(["impersonate"], ["serviceaccounts"]), namespace=None),
         "violation", "impersonate"),
    Case("impersonate-user-extras", ROLES, CR,
         role(rule(["impersonate"], ["userextras/*"], ["authentication.k8s.io"]), namespace=None), "violation"),
    Case("mint-tokens", ROLES, R, role(rule(["create"], ["serviceaccounts/token"])), "violation", "mint"),
    Case("aggregates-every-cluster-role", ROLES, CR,
         role(namespace=None, aggregationRule={"clusterRoleSelectors": [{}]}), "violation", "every ClusterRole"),
    Case("role-patch-every-verb", ROLES, f"{RBAC}:ClusterRolePatch",
         {"metadata": {"name": "existing"}, "rules": [rule(["*"], ["pods"])]}, "violation"),
    Case("role-list-item", ROLES, f"{RBAC}:RoleList",
         {"items": [role(rule(["get"], ["pods"])), role(rule(["create"], ["pods/exec"]))]}, "violation", "items[1]"),
    Case("role-v1alpha1", ROLES, "kubernetes:rbac.authorization.k8s.io/v1alpha1:ClusterRole",
         role(rule(["*"], ["*"], ["*"]), namespace=None), "violation"),
    Case("role-verbs-unknown", ROLES, R, role(rule([UNKNOWN_STRING_VALUE], ["pods"])), "unknown"),
    Case("namespaced-read-only", ROLES, R,
         role(rule(["get", "list", "watch"], ["pods", "services", "configmaps", "secrets"])), "pass"),
    Case("cluster-read-named-secret", ROLES, CR,
         role(rule(["get"], ["secrets"], resourceNames=["servestack-api-key"]), namespace=None), "pass"),
    Case("secrets-in-an-api-group-that-has-none", ROLES, CR, role(rule(["get"], ["secrets"], ["apps"]), namespace=None),
         "pass"),
    Case("read-pods-and-logs", ROLES, CR, role(rule(["get", "list"], ["pods", "pods/log"]), namespace=None), "pass"),
    Case("aggregates-by-own-label", ROLES, CR,
         role(namespace=None, aggregationRule={"clusterRoleSelectors": [
             {"matchLabels": {"servestack.io/aggregate-to-monitoring": "true"}}]}), "pass"),
    Case("deployments-scale", ROLES, R,
         role(rule(["get", "update", "patch"], ["deployments", "deployments/scale"], ["apps"])), "pass"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_rbac_case(case: Case) -> None:
    assert_case(case)


def test_case_ids_are_unique() -> None:
    assert len({c.id for c in CASES}) == len(CASES)
