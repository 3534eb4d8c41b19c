"""servestack's policy rules, importable without starting the policy pack's server.

`RULES` lists every rule with its metadata; `build_policies()` turns them into the pulumi_policy
objects that `policies/__main__.py` hands to `PolicyPack` and that `servestack check` runs offline.
"""

from __future__ import annotations

from pulumi_policy import Policy

from policies.rules.budget import BUDGET_RULES
from policies.rules.cluster import CLUSTER_RULES
from policies.rules.common import Rule
from policies.rules.credentials import CREDENTIAL_RULES
from policies.rules.endpoint import ENDPOINT_RULES
from policies.rules.identity import IDENTITY_RULES
from policies.rules.kubernetes import KUBERNETES_RULES
from policies.rules.lifecycle import LIFECYCLE_RULES
from policies.rules.network import NETWORK_RULES
from policies.rules.rbac import RBAC_RULES
from policies.rules.registry import REGISTRY_RULES
from policies.rules.storage import STORAGE_RULES

PACK_NAME = "servestack"
RULES: list[Rule] = [*NETWORK_RULES, *CLUSTER_RULES, *KUBERNETES_RULES, *BUDGET_RULES, *LIFECYCLE_RULES,
                     *IDENTITY_RULES, *STORAGE_RULES, *RBAC_RULES, *REGISTRY_RULES, *ENDPOINT_RULES,
                     *CREDENTIAL_RULES]


def build_policies() -> list[Policy]:
    return [rule.policy() for rule in RULES]


__all__ = ["PACK_NAME", "RULES", "Rule", "build_policies"]
