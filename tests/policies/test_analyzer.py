"""The pack as the Pulumi CLI meets it: `policies/` run as a program, answering pulumi_policy's gRPC service.

`policies/__main__.py` runs as the language host runs a directory program. pulumi_policy's own
`PolicyPack` builds its analyzer servicer and hands it to a gRPC server; here the server is a stand-in
that keeps the servicer and returns at once instead of blocking. The servicer then answers
GetAnalyzerInfo, Configure, Analyze and AnalyzeStack with protobuf requests, in-process and over a real
gRPC channel on 127.0.0.1.
"""

from __future__ import annotations

import json
import runpy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime import proto
from pulumi.runtime.proto import analyzer_pb2_grpc
from pulumi_policy import policy as pulumi_policy_module
from pulumi_policy.proxy import UNKNOWN_ARRAY_VALUE

from policies.rules import PACK_NAME, RULES

PACK_DIR = Path(__file__).resolve().parents[2] / "policies"
SG = "aws:ec2/securityGroup:SecurityGroup"
SG_URN = f"urn:pulumi:aws-prod::servestack::{SG}::nodes"


class _ServerStandIn:
    """Takes the place of grpc.server(): records what PolicyPack does with it, serves nothing."""

    def __init__(self) -> None:
        self.servicer: Any = None
        self.started = False

    def add_insecure_port(self, address: str) -> int:
        assert address.startswith("127.0.0.1:")
        return 50051

    def start(self) -> None:
        self.started = True

    def stop(self, grace: Any) -> None:
        self.started = False


@pytest.fixture(scope="module")
def launched() -> Iterator[tuple[Any, _ServerStandIn, bytes]]:
    server = _ServerStandIn()
    mp = pytest.MonkeyPatch()
    mp.setattr(pulumi_policy_module.grpc, "server", lambda *a, **k: server)
    mp.setattr(analyzer_pb2_grpc, "add_AnalyzerServicer_to_server",
               lambda servicer, srv: setattr(srv, "servicer", servicer))

    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt  # what stops PolicyPack's serving loop

    mp.setattr(pulumi_policy_module.time, "sleep", interrupt)

    class _Stdout:
        def __init__(self) -> None:
            self.buffer = self
            self.data = b""

        def write(self, data: bytes) -> None:
            self.data += data

    stdout = _Stdout()
    mp.setattr(pulumi_policy_module.sys, "stdout", stdout)
    try:
        runpy.run_path(str(PACK_DIR), run_name="__main__")
    finally:
        mp.undo()
    yield server.servicer, server, stdout.data


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


def _analyze(servicer: Any, type_: str, urn: str, props: dict[str, Any]) -> Any:
    return servicer.Analyze(proto.AnalyzeRequest(type=type_, urn=urn, name=urn.rsplit("::", 1)[-1],
                                                 properties=_struct(props)), None)


def _configure(servicer: Any, config: dict[str, tuple[Any, dict[str, Any]]]) -> None:
    request = proto.ConfigureAnalyzerRequest()
    for name, (level, props) in config.items():
        request.policyConfig[name].CopyFrom(proto.PolicyConfig(enforcementLevel=level, properties=_struct(props)))
    assert isinstance(servicer.Configure(request, None), empty_pb2.Empty)


WORLD_SSH_AND_8443 = {"ingress": [
    {"protocol": "tcp", "fromPort": 22, "toPort": 22, "cidrBlocks": ["0.0.0.0/0"]},
    {"protocol": "tcp", "fromPort": 8443, "toPort": 8443, "ipv6CidrBlocks": ["::/0"]},
]}


def test_pack_starts_and_prints_its_port(launched: tuple[Any, _ServerStandIn, bytes]) -> None:
    servicer, server, printed = launched
    assert servicer is not None and isinstance(servicer, proto.AnalyzerServicer)
    assert printed == b"50051\n"  # the CLI reads the port from the first line
    assert server.started is False  # stopped again by the interrupt


def test_analyzer_info_reports_every_policy(launched: tuple[Any, _ServerStandIn, bytes]) -> None:
    info = launched[0].GetAnalyzerInfo(empty_pb2.Empty(), None)
    assert info.name == PACK_NAME and info.supportsConfig
    by_name = {p.name: p for p in info.policies}
    assert sorted(by_name) == sorted(r.name for r in RULES)
    levels = {"mandatory": proto.MANDATORY, "advisory": proto.ADVISORY}
    for rule in RULES:
        info_policy = by_name[rule.name]
        assert info_policy.enforcementLevel == levels[rule.enforcement.value]
        assert info_policy.remediation_steps == rule.remediation
        assert info_policy.severity != proto.POLICY_SEVERITY_UNSPECIFIED
        expected_type = proto.POLICY_TYPE_STACK if rule.stack else proto.POLICY_TYPE_RESOURCE
        assert info_policy.policy_type == expected_type
        assert "failClosed" in info_policy.configSchema.properties
    admin = by_name["no-world-admin-ports"].configSchema.properties
    assert "22" in list(admin["adminPorts"]["default"]) and "exemptions" in admin


def test_analyze_maps_levels_and_config_as_the_cli_would(launched: tuple[Any, _ServerStandIn, bytes]) -> None:
    servicer = launched[0]
    _configure(servicer, {"world-ingress-allowlist": (proto.ADVISORY, {})})
    diagnostics = _analyze(servicer, SG, SG_URN, WORLD_SSH_AND_8443).diagnostics
    levels = {(d.policyName, d.enforcementLevel) for d in diagnostics}
    assert ("no-world-admin-ports", proto.MANDATORY) in levels
    assert ("world-ingress-allowlist", proto.ADVISORY) in levels
    allowlist = [d for d in diagnostics if d.policyName == "world-ingress-allowlist"]
    assert len(allowlist) == 2 and any("8443" in d.message for d in allowlist)

    # A prod stack's config: the allow-list becomes mandatory and 8443 is an allowed public port.
    _configure(servicer, {"world-ingress-allowlist": (proto.MANDATORY, {"allowedPublicPorts": [443, 8443]})})
    allowlist = [d for d in _analyze(servicer, SG, SG_URN, WORLD_SSH_AND_8443).diagnostics
                 if d.policyName == "world-ingress-allowlist"]
    assert [d.enforcementLevel for d in allowlist] == [proto.MANDATORY]
    assert "22" in allowlist[0].message and "8443" not in allowlist[0].message.split("(sources")[0]


def test_disabled_policy_is_skipped(launched: tuple[Any, _ServerStandIn, bytes]) -> None:
    servicer = launched[0]
    _configure(servicer, {"no-world-admin-ports": (proto.DISABLED, {})})
    names = {d.policyName for d in _analyze(servicer, SG, SG_URN, WORLD_SSH_AND_8443).diagnostics}
    assert "no-world-admin-ports" not in names and "world-ingress-allowlist" in names
    _configure(servicer, {})


def test_unknown_values_become_advisory_cannot_verify(launched: tuple[Any, _ServerStandIn, bytes]) -> None:
    servicer = launched[0]
    _configure(servicer, {})
    props = {"ingress": [{"protocol": "tcp", "fromPort": 22, "toPort": 22, "cidrBlocks": UNKNOWN_ARRAY_VALUE}]}
    admin = [d for d in _analyze(servicer, SG, SG_URN, props).diagnostics if d.policyName == "no-world-admin-ports"]
    assert len(admin) == 1 and admin[0].enforcementLevel == proto.ADVISORY
    assert "cannot verify" in admin[0].message and "cidrBlocks" in admin[0].message

    _configure(servicer, {"no-world-admin-ports": (proto.MANDATORY, {"failClosed": True})})
    admin = [d for d in _analyze(servicer, SG, SG_URN, props).diagnostics if d.policyName == "no-world-admin-ports"]
    assert [d.enforcementLevel for d in admin] == [proto.MANDATORY]
    _configure(servicer, {})


def test_analyze_stack_resolves_dependencies(launched: tuple[Any, _ServerStandIn, bytes]) -> None:
    servicer = launched[0]
    _configure(servicer, {"gpu-budget": (proto.MANDATORY, {"budgetPerHour": 1.0})})
    group_urn = SG_URN
    rule_urn = "urn:pulumi:aws-prod::servestack::aws:ec2/securityGroupRule:SecurityGroupRule::nodes-https"
    pool_urn = "urn:pulumi:aws-prod::servestack::aws:eks/nodeGroup:NodeGroup::gpu"
    request = proto.AnalyzeStackRequest(resources=[
        proto.AnalyzerResource(type=SG, urn=group_urn, name="nodes", properties=_struct(
            {"ingress": [{"protocol": "tcp", "fromPort": 443, "toPort": 443, "cidrBlocks": ["10.0.0.0/8"]}]})),
        proto.AnalyzerResource(
            type="aws:ec2/securityGroupRule:SecurityGroupRule", urn=rule_urn, name="nodes-https",
            properties=_struct({"type": "ingress", "protocol": "tcp", "fromPort": 443, "toPort": 443,
                                "cidrBlocks": ["10.0.0.0/8"], "securityGroupId": "sg-1"}),
            dependencies=[group_urn],
            propertyDependencies={"securityGroupId": proto.AnalyzerPropertyDependencies(urns=[group_urn])}),
        proto.AnalyzerResource(type="aws:eks/nodeGroup:NodeGroup", urn=pool_urn, name="gpu", properties=_struct(
            {"instanceTypes": ["g6.xlarge"], "scalingConfig": {"maxSize": 4, "minSize": 0}})),
    ])
    diagnostics = {d.policyName: d for d in servicer.AnalyzeStack(request, None).diagnostics}
    assert diagnostics["aws-sg-inline-xor-standalone"].urn == group_urn
    assert diagnostics["aws-sg-inline-xor-standalone"].enforcementLevel == proto.MANDATORY
    assert "over the budget of $1.00/h" in diagnostics["gpu-budget"].message
    _configure(servicer, {})


def test_the_servicer_answers_over_a_real_grpc_channel(launched: tuple[Any, _ServerStandIn, bytes]) -> None:
    server = grpc.server(pulumi_policy_module.futures.ThreadPoolExecutor(max_workers=2))
    analyzer_pb2_grpc.add_AnalyzerServicer_to_server(launched[0], server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = analyzer_pb2_grpc.AnalyzerStub(channel)
            info = stub.GetAnalyzerInfo(empty_pb2.Empty(), timeout=10)
            assert len(info.policies) == len(RULES)
            response = stub.Analyze(proto.AnalyzeRequest(type=SG, urn=SG_URN, name="nodes",
                                                         properties=_struct(WORLD_SSH_AND_8443)), timeout=10)
            assert any(d.policyName == "no-world-admin-ports" and d.enforcementLevel == proto.MANDATORY
                       for d in response.diagnostics)
    finally:
        server.stop(0)


# --- the same rules as `servestack check`, on the shipped stacks -------------------------------------

LEVELS = {"advisory": proto.ADVISORY, "mandatory": proto.MANDATORY, "disabled": proto.DISABLED}
NAMES = {proto.ADVISORY: "advisory", proto.MANDATORY: "mandatory"}


def _configure_from_file(servicer: Any, config: dict[str, Any]) -> None:
    """What `pulumi preview --policy-pack-config FILE` sends: every policy, with the file's enforcement level (else
    the policy's own) and the file's other settings as its properties."""
    info = servicer.GetAnalyzerInfo(empty_pb2.Empty(), None)
    request = proto.ConfigureAnalyzerRequest()
    for policy in info.policies:
        settings = dict(config.get(policy.name) or {})
        level = settings.pop("enforcementLevel", None)
        request.policyConfig[policy.name].CopyFrom(proto.PolicyConfig(
            enforcementLevel=LEVELS[level] if level else policy.enforcementLevel, properties=_struct(settings)))
    servicer.Configure(request, None)


def _after_description(servicer: Any, diagnostic: Any) -> str:
    message: str = diagnostic.message
    if message.startswith("can't run policy"):
        return message.split(" during preview: ", 1)[1]
    return message.removeprefix(diagnostic.description + "\n")


def _preview(servicer: Any, plan: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    """The diagnostics of a preview of the plan: Analyze per resource, then AnalyzeStack, as the engine calls them."""
    stack_urn = f"urn:pulumi:{plan['stack']}::{plan['project']}::pulumi:pulumi:Stack::{plan['project']}-{plan['stack']}"
    by_urn = {r["urn"]: r for r in plan["resources"]}
    found: set[tuple[str, str, str, str]] = set()

    def provider(r: dict[str, Any]) -> Any:
        p = by_urn.get(r.get("provider") or "")
        return None if p is None else proto.AnalyzerProviderResource(
            type=p["type"], urn=p["urn"], name=p["name"], properties=_struct(p["inputs"]))

    resources = []
    for r in plan["resources"]:
        options = proto.AnalyzerResourceOptions(parent=r.get("parent") or "")
        request = proto.AnalyzeRequest(type=r["type"], urn=r["urn"], name=r["name"], properties=_struct(r["inputs"]),
                                       options=options, provider=provider(r))
        for d in servicer.Analyze(request, None).diagnostics:
            found.add((d.policyName, d.urn or r["urn"], NAMES[d.enforcementLevel], _after_description(servicer, d)))
        resources.append(proto.AnalyzerResource(
            type=r["type"], urn=r["urn"], name=r["name"], properties=_struct(r["inputs"]), options=options,
            provider=provider(r), parent=r.get("parent") or "", dependencies=r.get("dependencies") or [],
            propertyDependencies={k: proto.AnalyzerPropertyDependencies(urns=v)
                                  for k, v in (r.get("propertyDependencies") or {}).items()}))
    for d in servicer.AnalyzeStack(proto.AnalyzeStackRequest(resources=resources), None).diagnostics:
        found.add((d.policyName, d.urn or stack_urn, NAMES[d.enforcementLevel], _after_description(servicer, d)))
    return found


@pytest.mark.parametrize("stack", ["aws-prod", "gcp-dev", "azure-prod"])
def test_preview_with_the_committed_config_finds_what_servestack_check_finds(
        launched: tuple[Any, _ServerStandIn, bytes], stack: str, stack_plan: Any) -> None:
    from policies.rules.stack_config import CONFIG_DIR
    from servestack import check

    config = json.loads((CONFIG_DIR / f"{stack}.json").read_text())
    servicer = launched[0]
    _configure_from_file(servicer, config)
    try:
        plan = stack_plan(stack)
        preview = _preview(servicer, plan)
        offline = {(v.policy, v.urn, v.level, v.message) for v in check.check_plan(plan)}
        assert preview == offline
        assert not any(level == "mandatory" for _, _, level, _ in preview)
        # The gateway serves HTTPS: the prod stacks need no exemption from public-endpoint-tls.
        if stack.endswith("-prod"):
            assert "exemptions" not in config["public-endpoint-tls"]
            assert config["public-endpoint-tls"]["enforcementLevel"] == "mandatory"
    finally:
        _configure(servicer, {})


def test_exemptible_stack_rules_declare_exemptions_in_their_schema(
        launched: tuple[Any, _ServerStandIn, bytes]) -> None:
    info = launched[0].GetAnalyzerInfo(empty_pb2.Empty(), None)
    by_name = {p.name: p for p in info.policies}
    for rule in RULES:
        properties = by_name[rule.name].configSchema.properties
        assert ("exemptions" in properties) == (not rule.stack or rule.exemptible), rule.name
