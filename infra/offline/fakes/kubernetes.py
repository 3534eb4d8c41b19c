"""Kubernetes objects and random values, as a cluster and pulumi-random would fill them in."""

from __future__ import annotations

from typing import Any

from pulumi.runtime.mocks import MockResourceArgs

from infra.offline.fakes import FakeContext, ResourceFake


def _service(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    spec = args.inputs.get("spec") or {}
    status: dict[str, Any] = {}
    if spec.get("type") == "LoadBalancer":
        # 203.0.113.0/24 is reserved for documentation: it can never be a real endpoint.
        octet = int(ctx.hex(args.name, length=2), 16) % 250 + 1
        status = {"loadBalancer": {"ingress": [{"ip": f"203.0.113.{octet}"}]}}
    return args.name, {"status": status}


def _random_password(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    length = int(args.inputs.get("length", 32))
    return args.name, {"result": ctx.hex("password", args.name, length=64)[:length]}


def _random_string(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    length = int(args.inputs.get("length", 8))
    return args.name, {"result": ctx.hex("random-string", args.name, length=64)[:length]}


RESOURCES: dict[str, ResourceFake] = {
    "random:index/randomString:RandomString": _random_string,
    "kubernetes:core/v1:Service": _service,
    "random:index/randomPassword:RandomPassword": _random_password,
}
