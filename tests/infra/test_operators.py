"""On-call access: the viewer and operator Roles in every plan, bound to each cloud's groups (EKS access entries'
Kubernetes groups, GKE Google Groups, AKS Entra ID groups), granting neither secrets nor exec; the config checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from infra.clouds.aws import OPERATOR_GROUP, VIEWER_GROUP
from infra.clouds.azure import AKS_CLUSTER_USER
from infra.config import ConfigError, parse_config
from infra.operators import OPERATOR, OPERATOR_RULES, VIEWER, VIEWER_RULES
from servestack.check import check_plan
from servestack.offline.plan import stack_names
from tests.infra.plans import inputs, one, resources

RBAC = "kubernetes:rbac.authorization.k8s.io/v1"
ROLE, BINDING = f"{RBAC}:Role", f"{RBAC}:RoleBinding"
ACCESS_ENTRY = "aws:eks/accessEntry:AccessEntry"
FORBIDDEN = {"secrets", "pods/exec", "pods/attach", "pods/portforward", "*", "pods/*"}
READ = ["get", "list", "watch"]

Plans = Callable[[str], dict[str, Any]]


def _roles(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["inputs"]["metadata"]["name"]: r["inputs"] for r in resources(plan, ROLE)}


def _subjects(plan: dict[str, Any]) -> dict[str, list[str]]:
    found = {}
    for binding in resources(plan, BINDING):
        spec = binding["inputs"]
        assert spec["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                   "name": spec["metadata"]["name"]}
        assert {s["kind"] for s in spec["subjects"]} == {"Group"}
        found[spec["metadata"]["name"]] = [s["name"] for s in spec["subjects"]]
    return found


def test_the_roles_grant_what_on_call_needs() -> None:
    assert VIEWER_RULES[0] == {"apiGroups": [""], "resources": ["pods", "pods/log", "events", "services",
                                                                 "endpoints"], "verbs": READ}
    assert {(g, r) for rule in VIEWER_RULES for g in rule["apiGroups"] for r in rule["resources"]} >= {
        ("apps", "deployments"), ("apps", "replicasets"), ("keda.sh", "scaledobjects"),
        ("autoscaling", "horizontalpodautoscalers")}
    assert all(rule["verbs"] == READ for rule in VIEWER_RULES)
    writes = {(r, v) for rule in OPERATOR_RULES for r in rule["resources"] for v in rule["verbs"] if v not in READ}
    # Nothing that writes a pod template or an autoscaler: those would reach the namespace's Secrets.
    assert writes == {("pods/eviction", "create"), ("pods", "delete")}


@pytest.mark.parametrize("stack", stack_names())
def test_no_stack_grants_secrets_or_exec_to_anyone(stack: str, stack_plan: Plans) -> None:
    plan = stack_plan(stack)
    roles = _roles(plan)
    assert set(roles) == {VIEWER, OPERATOR}
    for name, role in roles.items():
        assert role["metadata"]["namespace"] == "servestack"
        for rule in role["rules"]:
            assert not set(rule["resources"]) & FORBIDDEN, (name, rule)
            assert "*" not in rule["verbs"] and "*" not in rule["apiGroups"], (name, rule)
    # Only on-call's groups are bound: no user, no service account.
    for binding in resources(plan, BINDING):
        assert {s["kind"] for s in binding["inputs"]["subjects"]} == {"Group"}


def test_eks_maps_iam_roles_to_the_groups_by_access_entries(stack_plan: Plans) -> None:
    plan = stack_plan("aws-prod")
    assert _subjects(plan) == {VIEWER: [VIEWER_GROUP], OPERATOR: [OPERATOR_GROUP]}
    entries = {e["inputs"]["principalArn"]: e["inputs"] for e in resources(plan, ACCESS_ENTRY)
               if e["inputs"].get("kubernetesGroups")}
    assert {arn: (e["type"], e["kubernetesGroups"]) for arn, e in entries.items()} == {
        "arn:aws:iam::123456789012:role/servestack-support": ("STANDARD", [VIEWER_GROUP]),
        "arn:aws:iam::123456789012:role/servestack-oncall": ("STANDARD", [OPERATOR_GROUP]),
    }
    # No access policy: Kubernetes RBAC (the Roles above) is all they get.
    associations = [a["inputs"]["principalArn"] for a in resources(plan, "aws:eks/accessPolicyAssociation:"
                                                                           "AccessPolicyAssociation")]
    assert not set(entries) & set(associations)


def test_aws_dev_without_on_call_binds_nobody(stack_plan: Plans) -> None:
    plan = stack_plan("aws-dev")
    assert _subjects(plan) == {}
    assert [e for e in resources(plan, ACCESS_ENTRY) if e["inputs"].get("kubernetesGroups")] == []


def test_gke_binds_google_groups_through_the_security_group(stack_plan: Plans) -> None:
    plan = stack_plan("gcp-prod")
    assert _subjects(plan) == {VIEWER: ["servestack-support@example.com"],
                               OPERATOR: ["servestack-oncall@example.com"]}
    cluster = inputs(plan, "gcp:container/cluster:Cluster")
    assert cluster["authenticatorGroupsConfig"] == {"securityGroup": "gke-security-groups@example.com"}
    assert "authenticatorGroupsConfig" not in inputs(stack_plan("gcp-dev"), "gcp:container/cluster:Cluster")


def test_aks_binds_entra_groups_and_lets_them_fetch_a_kubeconfig(stack_plan: Plans) -> None:
    plan = stack_plan("azure-prod")
    viewer, operator = "3f2b6a51-8c1e-4d7a-9b0e-2a6c5d4e7f10", "7a9c1e3d-5b2f-4e6a-8d0c-1b3e5f7a9c2d"
    assert _subjects(plan) == {VIEWER: [viewer], OPERATOR: [operator]}
    cluster = one(plan, "azure-native:containerservice:ManagedCluster")
    assert cluster["inputs"]["enableRBAC"] is True
    grants = {g["inputs"]["principalId"]: g["inputs"]
              for g in resources(plan, "azure-native:authorization:RoleAssignment")
              if g["inputs"].get("principalType") == "Group"}
    assert set(grants) == {viewer, operator}
    # On the cluster, as the deployer's admin grant is: listClusterUserCredential there and nothing more.
    admin = inputs(plan, "azure-native:authorization:RoleAssignment", "servestack-deployer-cluster-admin")
    for grant in grants.values():
        assert grant["roleDefinitionId"].endswith(f"/roleDefinitions/{AKS_CLUSTER_USER}")
        assert grant["scope"] == admin["scope"] and "/managedClusters/" in grant["scope"]


@pytest.mark.parametrize("stack", ["aws-prod", "gcp-prod", "azure-prod"])
def test_the_policy_pack_passes_with_on_call_bound(stack: str, stack_plan: Plans) -> None:
    assert [(v.policy, v.message) for v in check_plan(stack_plan(stack))] == []


# --- config ------------------------------------------------------------------------------------------

BASE = {
    "aws": {"servestack:cloud": "aws", "aws:region": "us-east-1",
            "servestack:access": {"endpointCidrs": ["203.0.113.0/24"], "apiCidrs": ["198.51.100.0/24"]}},
    "gcp": {"servestack:cloud": "gcp", "gcp:region": "us-central1", "gcp:project": "p",
            "servestack:access": {"endpointCidrs": ["203.0.113.0/24"], "apiAccess": "dns"}},
    "azure": {"servestack:cloud": "azure", "azure-native:location": "eastus",
              "servestack:access": {"endpointCidrs": ["203.0.113.0/24"], "apiCidrs": ["198.51.100.0/24"]}},
    "local": {"servestack:cloud": "local", "servestack:gpu": {"type": "none"},
              "servestack:serving": {"image": "servestack-serving:0.1.0"},
              "servestack:model": {"name": "tiny", "source": "image", "revision": "r1"},
              "servestack:local": {"kubeContext": "kind-servestack"},
              "servestack:access": {"endpointCidrs": ["10.0.0.0/8"]}},
}


def _problems(cloud: str, access: dict[str, Any], **more: Any) -> list[str]:
    values = {**BASE[cloud], **more}
    values["servestack:access"] = {**values["servestack:access"], **access}
    try:
        parse_config("test", values)
    except ConfigError as error:
        return [p for p in error.problems if "Groups" in p or "securityGroup" in p]
    return []


@pytest.mark.parametrize(("cloud", "access", "more", "expected"), [
    ("aws", {"viewerGroups": ["oncall"]}, {},
     "servestack:access.viewerGroups[0]: 'oncall' is not an IAM role or user ARN"),
    ("gcp", {"operatorGroups": ["not-an-email"]}, {"servestack:gcp": {"securityGroup": "gke-security-groups@x.com"}},
     "servestack:access.operatorGroups[0]: 'not-an-email' is not a Google Group e-mail"),
    ("gcp", {"viewerGroups": ["support@example.com"]}, {},
     "servestack:gcp.securityGroup: missing, but servestack:access lists on-call Google Groups"),
    ("gcp", {}, {"servestack:gcp": {"securityGroup": "oncall@example.com"}},
     "servestack:gcp.securityGroup: 'oncall@example.com' is not gke-security-groups@ of a domain"),
    ("azure", {"viewerGroups": ["Support Team"]}, {},
     "servestack:access.viewerGroups[0]: 'Support Team' is not an Entra ID group's object id"),
    ("local", {"operatorGroups": ["system:masters"]}, {},
     "servestack:access.operatorGroups[0]: 'system:masters' is not a Kubernetes group name"),
    ("local", {"viewerGroups": ["oncall"], "operatorGroups": ["oncall"]}, {},
     "servestack:access.operatorGroups[0]: 'oncall' is also in servestack:access.viewerGroups"),
    ("local", {"viewerGroups": "oncall-team,sre"}, {},
     "servestack:access.viewerGroups[0]: 'oncall-team,sre' is not a Kubernetes group name"),
    ("local", {"viewerGroups": ["sre", "sre"]}, {}, "servestack:access.viewerGroups[1]: 'sre' is listed twice"),
    ("aws", {"operatorGroups": ["arn:aws:iam::123456789012:role/admin"]},
     {"servestack:aws": {"adminPrincipalArns": ["arn:aws:iam::123456789012:role/admin"]}},
     "servestack:access.operatorGroups[0]: 'arn:aws:iam::123456789012:role/admin' is a cluster admin already"),
])
def test_bad_on_call_groups_are_refused(cloud: str, access: dict[str, Any], more: dict[str, Any],
                                        expected: str) -> None:
    problems = _problems(cloud, access, **more)
    assert any(p.startswith(expected) for p in problems), problems


def test_good_on_call_groups_are_read() -> None:
    config = parse_config("test", {**BASE["local"], "servestack:access": {
        "endpointCidrs": ["10.0.0.0/8"], "viewerGroups": ["support"], "operatorGroups": '["oncall", "sre"]'}})
    assert (config.access.viewer_groups, config.access.operator_groups) == (("support",), ("oncall", "sre"))
