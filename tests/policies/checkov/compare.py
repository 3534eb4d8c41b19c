"""The pack and Checkov on the same cases: the table of policies/README.md's comparison.

Each file under terraform/ and kubernetes/ is the Terraform (or Kubernetes YAML) form of the hostile case of the
same id in tests/policies/test_hostile_*.py. The pack's verdict is the case's own; Checkov's is the checks that
fail on the file and are about the case's rule (`RULE_CHECKS`), not the many unrelated ones (logging, replicas,
probes) that also fail there. Checkov is not a dependency of the project; install it apart and pass its path:

    python3 -m venv /tmp/checkov && /tmp/checkov/bin/pip install checkov==3.3.30
    .venv/bin/python -m tests.policies.checkov.compare /tmp/checkov/bin/checkov
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.policies import (
    test_hostile_credentials,
    test_hostile_endpoint,
    test_hostile_identity,
    test_hostile_rbac,
    test_hostile_registry,
    test_hostile_storage,
)

HERE = Path(__file__).parent
SUITES = (test_hostile_identity, test_hostile_storage, test_hostile_rbac, test_hostile_registry,
          test_hostile_endpoint, test_hostile_credentials)
# The Checkov checks about each rule's concern. A check that fails on a case's file counts for the case only when
# it is about the case's rule: CKV_GCP_117 (basic roles) fails on a roles/viewer grant to every Gmail account, but
# it does not see the public member.
RULE_CHECKS: dict[str, set[str]] = {
    "iam-no-admin-policy": {"CKV_AWS_62", "CKV_AWS_63", "CKV2_AWS_40", "CKV_AWS_355", "CKV_AWS_286", "CKV_AWS_287",
                            "CKV_AWS_288", "CKV_AWS_289", "CKV_AWS_290", "CKV_AWS_274"},
    "iam-trust-restricted": {"CKV_AWS_60", "CKV_AWS_61", "CKV_AWS_393"},
    "gcp-no-primitive-roles": {"CKV_GCP_117", "CKV_GCP_42"},
    "gcp-no-public-iam": {"CKV_GCP_28", "CKV_GCP_101", "CKV_GCP_102"},
    "azure-no-admin-roles": {"CKV_AZURE_39"},
    "storage-not-public": {"CKV_AWS_20", "CKV_AWS_57", "CKV_AWS_53", "CKV_AWS_54", "CKV_AWS_55", "CKV_AWS_56",
                           "CKV_AWS_70", "CKV_AWS_375", "CKV_AZURE_190", "CKV2_AZURE_47", "CKV_AZURE_34"},
    "storage-secure-transport": {"CKV_AZURE_3", "CKV_AZURE_44"},
    "registry-not-public": {"CKV_AWS_32", "CKV_AZURE_137", "CKV_AZURE_138", "CKV_GCP_101"},
    "registry-immutable-tags": {"CKV_AWS_51"},
    "ecr-scan-on-push": {"CKV_AWS_163"},
    "public-endpoint-tls": {"CKV2_AWS_20", "CKV_AWS_2"},
    "serving-api-key-required": set(),
    "k8s-rbac-no-admin-bindings": {"CKV2_K8S_3", "CKV2_K8S_4", "CKV2_K8S_5"},
    "k8s-rbac-no-broad-roles": {"CKV_K8S_49", "CKV_K8S_155", "CKV_K8S_156", "CKV_K8S_157", "CKV_K8S_158"},
    "k8s-no-plaintext-cloud-credentials": {"CKV_SECRET_"},  # every secret-scanning check
}
STACK_RULES = {test_hostile_endpoint: "public-endpoint-tls", test_hostile_registry: "ecr-scan-on-push"}


def pack_verdicts() -> dict[str, tuple[str, str]]:
    """Case id -> (the verdict the pack reaches, the rule that reaches it)."""
    verdicts: dict[str, tuple[str, str]] = {}
    for suite in SUITES:
        for case in getattr(suite, "CASES", []):
            verdicts[case.id] = (case.expect, case.policy)
        for stack_case in getattr(suite, "STACK_CASES", []):
            verdicts[stack_case.id] = (stack_case.expect, STACK_RULES[suite])
    return verdicts


def corpus() -> list[Path]:
    return sorted([*HERE.glob("terraform/*.tf"), *HERE.glob("kubernetes/*.yaml")], key=lambda p: p.stem)


def checkov_failures(checkov: str) -> dict[str, set[str]]:
    """Case id -> the ids of the Checkov checks about the case's rule that fail on its file."""
    verdicts = pack_verdicts()
    found: dict[str, set[str]] = {p.stem: set() for p in corpus()}
    runs = [("terraform", ["--framework", "terraform"]), ("kubernetes", ["--framework", "kubernetes"]),
            (".", ["--framework", "secrets", "--enable-secret-scan-all-files"])]
    for directory, options in runs:
        result = subprocess.run([checkov, "-d", str(HERE / directory), *options, "-o", "json", "--quiet",
                                 "--skip-download"], capture_output=True, text=True, check=False)
        reports: Any = json.loads(result.stdout or "[]")
        for report in reports if isinstance(reports, list) else [reports]:
            for check in report.get("results", {}).get("failed_checks", []):
                case, check_id = Path(check["file_path"]).stem, check["check_id"]
                wanted = RULE_CHECKS[verdicts[case][1]] if case in verdicts else set()
                if check_id in wanted or (check_id.startswith("CKV_SECRET_") and "CKV_SECRET_" in wanted):
                    found[case].add(check_id)
    return found


def table(checkov: str) -> str:
    verdicts, failures = pack_verdicts(), checkov_failures(checkov)
    lines = ["| case | pack rule | should | pack | Checkov |", "|---|---|---|---|---|"]
    for path in corpus():
        expect, rule = verdicts[path.stem]
        should = "pass" if expect == "pass" else "flag"
        pack = {"pass": "passes", "unknown": "cannot verify"}.get(expect, "flags")
        checks = ", ".join(sorted(failures[path.stem]))
        checkov = (f"flags ({checks})" if checks else "misses") if should == "flag" else (
            f"flags ({checks}), wrongly" if checks else "passes")
        lines.append(f"| `{path.stem}` | `{rule}` | {should} | {pack} | {checkov} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(sys.argv[1] if len(sys.argv) > 1 else "checkov"))
