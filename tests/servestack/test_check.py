"""`servestack check`: the pack on offline plans, every shipped stack, the exit codes and the JSON."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pulumi_policy.proxy import UNKNOWN_ARRAY_VALUE

from policies.rules.stack_config import CONFIG_DIR, StackConfigError, committed, merged, pack_config, render
from servestack import check
from servestack.offline.plan import STACKS_DIR, stack_names

STACKS = stack_names(STACKS_DIR)
SG = "aws:ec2/securityGroup:SecurityGroup"
SERVICE = "kubernetes:core/v1:Service"


def _resource(type_: str, name: str, inputs: dict[str, Any], deps: list[str] | None = None) -> dict[str, Any]:
    return {"urn": f"urn:pulumi:t::servestack::{type_}::{name}", "type": type_, "name": name, "parent": None,
            "custom": True, "inputs": inputs, "dependencies": deps or []}


def _plan(*resources: dict[str, Any], config: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"project": "servestack", "stack": "t", "config": config or {"servestack:environment": "dev"},
            "resources": list(resources), "outputs": {}}


HTTPS_WORLD = _resource(SG, "lb", {"ingress": [{"protocol": "tcp", "fromPort": 443.0, "toPort": 443.0,
                                                "cidrBlocks": ["0.0.0.0/0"]}]})
HTTP_WORLD = _resource(SG, "web", {"ingress": [{"protocol": "tcp", "fromPort": 80.0, "toPort": 80.0,
                                                "cidrBlocks": ["0.0.0.0/0"]}]})
SSH_WORLD = _resource(SG, "bastion", {"ingress": [{"protocol": "tcp", "fromPort": 22.0, "toPort": 22.0,
                                                   "ipv6CidrBlocks": ["::/0"]}]})


@pytest.mark.parametrize("stack", STACKS)
def test_shipped_stack_has_no_mandatory_violation(stack: str, stack_plan: Callable[[str], dict[str, Any]]) -> None:
    violations = check.check_plan(stack_plan(stack))
    mandatory = [f"{v.policy} {v.urn}: {v.message}" for v in violations if v.level == "mandatory"]
    assert mandatory == []


@pytest.mark.parametrize("stack", STACKS)
def test_committed_policy_config_matches_the_stack(stack: str) -> None:
    path = CONFIG_DIR / f"{stack}.json"
    assert path.is_file(), f"missing {path}; run python -m policies.rules.stack_config"
    assert path.read_text() == render(stack), f"{path} is stale; run python -m policies.rules.stack_config"


def test_pack_config_from_stack_config() -> None:
    prod_only = ["world-ingress-allowlist", "registry-immutable-tags", "ecr-scan-on-push", "public-endpoint-tls",
                 "serving-api-key-required"]
    assert pack_config({"servestack:environment": "prod", "servestack:budgetPerHour": "12.5"}) == {
        **{rule: {"enforcementLevel": "mandatory"} for rule in prod_only}, "gpu-budget": {"budgetPerHour": 12.5}}
    assert pack_config({}) == {rule: {"enforcementLevel": "advisory"} for rule in prod_only}
    from policies.rules import RULES

    defaults = {r.name: r.enforcement.value for r in RULES}
    assert all(defaults[rule] == "advisory" for rule in prod_only)  # mandatory everywhere needs no prod switch
    with pytest.raises(StackConfigError, match="servestack:environment: 'qa' is not allowed"):
        pack_config({"servestack:environment": "qa"})
    with pytest.raises(StackConfigError, match="servestack:budgetPerHour: 'lots' is not a number"):
        pack_config({"servestack:budgetPerHour": "lots"})


def test_allowlist_is_advisory_in_dev_and_mandatory_in_prod() -> None:
    dev = check.check_plan(_plan(HTTPS_WORLD, HTTP_WORLD))
    prod = check.check_plan(_plan(HTTPS_WORLD, HTTP_WORLD, config={"servestack:environment": "prod"}))
    for violations, level in ((dev, "advisory"), (prod, "mandatory")):
        allowlist = [v for v in violations if v.policy == "world-ingress-allowlist"]
        assert [(v.urn.rsplit("::", 1)[-1], v.level) for v in allowlist] == [("web", level)]


def test_unknown_values_are_reported_as_cannot_verify() -> None:
    plan = _plan(_resource(SG, "nodes", {"ingress": [{"protocol": "tcp", "fromPort": 22.0, "toPort": 22.0,
                                                      "cidrBlocks": UNKNOWN_ARRAY_VALUE}]}))
    admin = [v for v in check.check_plan(plan) if v.policy == "no-world-admin-ports"]
    assert len(admin) == 1 and admin[0].level == "advisory" and admin[0].message.startswith("cannot verify")


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    check.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


def test_cli_exit_codes_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad, good = tmp_path / "bad.json", tmp_path / "good.json"
    bad.write_text(json.dumps(_plan(SSH_WORLD, HTTPS_WORLD)))
    good.write_text(json.dumps(_plan(HTTPS_WORLD)))
    out = tmp_path / "violations.json"

    assert _cli(["check", "--plan", str(bad), "--json", str(out)]) == 1
    rows = json.loads(out.read_text())["violations"]
    assert {(r["policy"], r["level"]) for r in rows} >= {("no-world-admin-ports", "mandatory"),
                                                         ("world-ingress-allowlist", "advisory")}
    assert all(set(r) == {"policy", "urn", "type", "level", "message"} for r in rows)
    assert all(r["type"] == SG and r["urn"].endswith("::bastion") for r in rows)
    printed = capsys.readouterr().out
    assert "no-world-admin-ports" in printed and "mandatory" in printed

    assert _cli(["check", "--plan", str(good), "--json", str(out)]) == 0
    assert json.loads(out.read_text()) == {"violations": []}
    assert _cli(["check", "--plan", str(tmp_path / "missing.json")]) == 2
    assert "error" in capsys.readouterr().err


def test_policy_config_file_overrides(tmp_path: Path) -> None:
    plan, config = tmp_path / "plan.json", tmp_path / "config.json"
    plan.write_text(json.dumps(_plan(SSH_WORLD)))
    config.write_text(json.dumps({"no-world-admin-ports": {"exemptions": [
        {"resource": "bastion", "reason": "break-glass host, IPv6 only, removed after the incident"}]}}))
    assert _cli(["check", "--plan", str(plan), "--policy-config", str(config)]) == 0


def test_regenerating_keeps_hand_written_entries() -> None:
    existing = {"k8s-no-privileged": {"exemptions": [{"namespace": "gpu-operator", "reason": "driver"}]},
                "gpu-budget": {"budgetPerHour": 1.0, "failClosed": True},
                "public-endpoint-tls": {"enforcementLevel": "advisory",
                                        "exemptions": [{"resource": "web", "reason": "TLS comes next"}]}}
    derived = pack_config({"servestack:environment": "prod", "servestack:budgetPerHour": 9})
    assert merged(existing, derived) == {
        **derived,
        "k8s-no-privileged": {"exemptions": [{"namespace": "gpu-operator", "reason": "driver"}]},
        "gpu-budget": {"budgetPerHour": 9.0, "failClosed": True},
        "public-endpoint-tls": {"enforcementLevel": "mandatory",
                                "exemptions": [{"resource": "web", "reason": "TLS comes next"}]}}


def test_readme_lists_every_rule_with_its_default_enforcement() -> None:
    from policies.rules import RULES

    readme = (CONFIG_DIR.parent / "README.md").read_text()
    for rule in RULES:
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{rule.name}` |")), None)
        assert row is not None, f"policies/README.md lacks a row for {rule.name}"
        assert row.split("|")[2].strip().startswith(rule.enforcement.value), row


def test_check_all_writes_one_report_per_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / "a.json").write_text(json.dumps({**_plan(HTTPS_WORLD), "stack": "a"}))
    assert check.check_all(plans, tmp_path / "check") == 0
    (plans / "b.json").write_text(json.dumps({**_plan(SSH_WORLD), "stack": "b"}))
    assert check.check_all(plans, tmp_path / "check") == 1
    assert json.loads((tmp_path / "check" / "a.json").read_text()) == {"violations": []}
    assert json.loads((tmp_path / "check" / "b.json").read_text())["violations"]
    assert "policy check" in capsys.readouterr().out


def test_a_failing_rule_is_a_mandatory_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    from policies.rules import network

    def broken(*args: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(network, "READERS", {SG: broken})
    failed = [v for v in check.check_plan(_plan(HTTPS_WORLD)) if "the rule failed" in v.message]
    assert failed and all(v.level == "mandatory" and "RuntimeError: boom" in v.message for v in failed)


def test_servestack_check_command_end_to_end(tmp_path: Path) -> None:
    import subprocess
    import sys

    plan, out = tmp_path / "plan.json", tmp_path / "out.json"
    plan.write_text(json.dumps(_plan(SSH_WORLD)))
    result = subprocess.run([sys.executable, "-m", "servestack.cli", "check", "--plan", str(plan), "--json", str(out)],
                            capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 1, result.stderr
    assert json.loads(out.read_text())["violations"][0]["policy"] == "no-world-admin-ports"


def _exemptions(stack: str) -> list[tuple[str, dict[str, Any]]]:
    return [(policy, entry) for policy, settings in committed(stack).items() if isinstance(settings, dict)
            for entry in settings.get("exemptions") or []]


EXEMPTING_STACKS = [s for s in STACKS if _exemptions(s)]


@pytest.mark.parametrize("stack", EXEMPTING_STACKS)
def test_every_committed_exemption_still_exempts_a_finding(stack: str,
                                                           stack_plan: Callable[[str], dict[str, Any]]) -> None:
    """An exemption the stack no longer needs (the TLS gateway landed, the device plugin runs as non-root) fails
    here, so that it is removed rather than left to hide the next problem."""
    plan = stack_plan(stack)
    namespaces = {r["urn"]: (r.get("inputs") or {}).get("metadata", {}).get("namespace") for r in plan["resources"]}
    config = merged(committed(stack), pack_config(plan.get("config") or {}))
    for policy, entry in _exemptions(stack):
        without = json.loads(json.dumps(config))
        without[policy]["exemptions"].remove(entry)
        hits = [v for v in check.check_plan(plan, without) if v.policy == policy and (
            v.urn == entry.get("resource") or v.urn.endswith(f"::{entry.get('resource')}")
            or (entry.get("namespace") is not None and namespaces.get(v.urn) == entry["namespace"]))]
        assert hits, f"policies/config/{stack}.json: the {policy} exemption {entry} exempts nothing; remove it"
        assert entry.get("reason", "").strip(), entry


def test_cloud_stacks_exempt_nothing_from_the_public_endpoint_rule() -> None:
    """The gateway terminates TLS on every cloud stack: the plain-HTTP Service the rule once exempted is gone."""
    for stack in ("aws-prod", "gcp-prod", "azure-prod", "aws-dev", "gcp-dev", "azure-dev"):
        config = committed(stack)["public-endpoint-tls"]
        assert config == {"enforcementLevel": "mandatory" if stack.endswith("-prod") else "advisory"}
