"""Kubernetes objects and random values, as a cluster and pulumi-random would fill them in."""

from __future__ import annotations

from typing import Any

from pulumi.runtime.mocks import MockResourceArgs

from infra.offline.fakes import FakeContext, ResourceFake
from policies.rules.kubernetes import internal_load_balancer


def _service(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    """A LoadBalancer Service's address as each cloud's controller reports it: an AWS NLB by DNS name (the
    load balancer controller fills in a hostname), elsewhere an IP; an internal one a private address."""
    spec = args.inputs.get("spec") or {}
    status: dict[str, Any] = {}
    if spec.get("type") == "LoadBalancer":
        internal = internal_load_balancer((args.inputs.get("metadata") or {}).get("annotations") or {}, spec)
        octet = int(ctx.hex(args.name, length=2), 16) % 250 + 1
        if ctx.config.get("servestack:cloud") == "aws":
            scheme = "internal-" if internal else ""
            ingress = {"hostname": f"{scheme}k8s-servesta-servesta-{ctx.hex('nlb', args.name, length=10)}"
                                   f".elb.{ctx.config.get('aws:region', 'us-east-1')}.amazonaws.com"}
        elif internal:
            ingress = {"ip": f"10.{octet % 200 + 20}.0.{octet}"}
        else:
            # 203.0.113.0/24 is reserved for documentation: it can never be a real endpoint.
            ingress = {"ip": f"203.0.113.{octet}"}
        status = {"loadBalancer": {"ingress": [ingress]}}
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
