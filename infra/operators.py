"""On-call access without cluster-admin: two namespaced Roles in the serving namespace, bound to the
Kubernetes groups the cloud puts on-call's identities in (Platform.access_groups).

- `servestack-viewer` reads what a page needs: pods and their logs, events, the Deployments and their
  ReplicaSets, Services, the autoscalers (KEDA ScaledObjects and the HPAs they or servestack make).
- `servestack-operator` can also evict and delete pods: a restart, one pod at a time within the disruption
  budget, while the Deployment recreates them.

It grants no write on Deployments or autoscalers: whoever may patch a pod template (even for `kubectl rollout
restart`) can mount any Secret of the namespace, or run another image as the serving identity, and whoever may
patch a ScaledObject can point KEDA's trigger (and any credentials it reads) elsewhere; a scale by hand is
undone by the autoscaler within one sync anyway. So neither Role grants anything on secrets (the API keys,
the limits store's password) nor pods/exec, pods/attach or pods/portforward: on-call never runs commands in
a serving pod nor reaches around the gateway to it. The clouds map their identities (EKS access entries'
Kubernetes groups, GKE Google Groups for RBAC, AKS Entra ID groups) in infra/clouds/.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

VIEWER = "servestack-viewer"
OPERATOR = "servestack-operator"
# Platform.access_groups keys.
ROLES = {"viewer": VIEWER, "operator": OPERATOR}

VIEWER_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["pods", "pods/log", "events", "services", "endpoints"],
     "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["apps"], "resources": ["deployments", "replicasets"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["keda.sh"], "resources": ["scaledobjects"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": ["get", "list", "watch"]},
]
OPERATOR_RULES: list[dict[str, Any]] = [
    *VIEWER_RULES,
    # `kubectl drain`-style eviction honours the disruption budget; delete is the last resort for a stuck pod.
    {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]},
]


def role_rules(role: str) -> list[dict[str, Any]]:
    return VIEWER_RULES if role == VIEWER else OPERATOR_RULES


def operator_access(name: str, namespace: pulumi.Input[str], groups: dict[str, Sequence[str]],
                    labels: dict[str, str], opts: pulumi.ResourceOptions) -> list[pulumi.Resource]:
    """Both Roles, and a RoleBinding for each that has groups (`groups`: "viewer"/"operator" -> group names)."""
    created: list[pulumi.Resource] = []
    for key, role_name in ROLES.items():
        role = k8s.rbac.v1.Role(
            f"{name}-{key}-role",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=role_name, namespace=namespace, labels=labels),
            rules=[k8s.rbac.v1.PolicyRuleArgs(api_groups=r["apiGroups"], resources=r["resources"], verbs=r["verbs"])
                   for r in role_rules(role_name)],
            opts=opts,
        )
        created.append(role)
        subjects = list(groups.get(key, ()))
        if not subjects:
            continue
        created.append(k8s.rbac.v1.RoleBinding(
            f"{name}-{key}-binding",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=role_name, namespace=namespace, labels=labels),
            role_ref=k8s.rbac.v1.RoleRefArgs(api_group="rbac.authorization.k8s.io", kind="Role", name=role_name),
            subjects=[k8s.rbac.v1.SubjectArgs(api_group="rbac.authorization.k8s.io", kind="Group", name=group)
                      for group in subjects],
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[role])),
        ))
    return created
