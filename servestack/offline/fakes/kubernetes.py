"""Kubernetes objects and random values, as a cluster and pulumi-random would fill them in."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pulumi.runtime.mocks import MockResourceArgs

from reading.load_balancers import internal_load_balancer
from servestack.offline.fakes import FakeContext, ResourceFake

# Where Envoy Gateway puts the Service of a Gateway's Envoy pods (its controller's own namespace).
ENVOY_GATEWAY_NAMESPACE = "envoy-gateway-system"


def _load_balancer_ingress(namespace: str, name: str, annotations: Mapping[str, Any], spec: Mapping[str, Any],
                           ctx: FakeContext) -> dict[str, str]:
    """A LoadBalancer Service's address as each cloud's controller reports it: an AWS NLB by DNS name (the load
    balancer controller names it k8s-<namespace>-<name>-<hash>, eight characters of each), elsewhere an IP; an
    internal one a private address."""
    internal = internal_load_balancer(dict(annotations), dict(spec))
    octet = int(ctx.hex(namespace, name, length=2), 16) % 250 + 1
    if ctx.config.get("servestack:cloud") == "aws":
        scheme = "internal-" if internal else ""
        short = [re.sub(r"[^a-z0-9]", "", part.lower())[:8] for part in (namespace, name)]
        return {"hostname": f"{scheme}k8s-{short[0]}-{short[1]}-{ctx.hex('nlb', namespace, name, length=10)}"
                            f".elb.{ctx.config.get('aws:region', 'us-east-1')}.amazonaws.com"}
    if internal:
        return {"ip": f"10.{octet % 200 + 20}.0.{octet}"}
    # 203.0.113.0/24 is reserved for documentation: it can never be a real endpoint.
    return {"ip": f"203.0.113.{octet}"}


def _service(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    spec = args.inputs.get("spec") or {}
    metadata = args.inputs.get("metadata") or {}
    status: dict[str, Any] = {}
    if spec.get("type") == "LoadBalancer":
        ingress = _load_balancer_ingress(str(metadata.get("namespace") or "default"),
                                         str(metadata.get("name") or args.name),
                                         metadata.get("annotations") or {}, spec, ctx)
        status = {"loadBalancer": {"ingress": [ingress]}}
    return args.name, {"status": status}


def _deployment(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    """A Deployment with the uid the API server gives every object (what an ownerReference names)."""
    metadata = dict(args.inputs.get("metadata") or {})
    digits = ctx.hex("uid", str(metadata.get("namespace") or "default"), str(metadata.get("name") or args.name),
                     length=32)
    uid = "-".join((digits[:8], digits[8:12], "4" + digits[13:16], "8" + digits[17:20], digits[20:]))
    return args.name, {"metadata": {**metadata, "uid": uid}}


def _envoy_proxy(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    """An EnvoyProxy: remembered, for the Gateways whose infrastructure it describes."""
    name = str((args.inputs.get("metadata") or {}).get("name") or args.name)
    ctx.memory.setdefault("envoy_proxies", {})[name] = args.inputs.get("spec") or {}
    return args.name, {}


def _gateway(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    """A Gateway as Envoy Gateway reports it: the addresses of its Envoy Service (described by the EnvoyProxy
    its infrastructure names, a LoadBalancer unless that says otherwise), copied from the Service's status: a
    DNS name as a Hostname, an IP as an IPAddress."""
    spec = args.inputs.get("spec") or {}
    reference = ((spec.get("infrastructure") or {}).get("parametersRef") or {}).get("name")
    proxy = ctx.memory.get("envoy_proxies", {}).get(reference, {})
    service = ((proxy.get("provider") or {}).get("kubernetes") or {}).get("envoyService") or {}
    if service.get("type", "LoadBalancer") != "LoadBalancer":
        return args.name, {"status": {"addresses": []}}
    name = str(service.get("name") or (args.inputs.get("metadata") or {}).get("name") or args.name)
    ingress = _load_balancer_ingress(ENVOY_GATEWAY_NAMESPACE, name, service.get("annotations") or {}, service, ctx)
    address = ({"type": "Hostname", "value": ingress["hostname"]} if "hostname" in ingress
               else {"type": "IPAddress", "value": ingress["ip"]})
    return args.name, {"status": {"addresses": [address]}}


def _random_password(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    length = int(args.inputs.get("length", 32))
    return args.name, {"result": ctx.hex("password", args.name, length=64)[:length]}


def _random_string(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    length = int(args.inputs.get("length", 8))
    return args.name, {"result": ctx.hex("random-string", args.name, length=64)[:length]}


RESOURCES: dict[str, ResourceFake] = {
    "random:index/randomString:RandomString": _random_string,
    "kubernetes:core/v1:Service": _service,
    "kubernetes:apps/v1:Deployment": _deployment,
    "kubernetes:gateway.envoyproxy.io/v1alpha1:EnvoyProxy": _envoy_proxy,
    "kubernetes:gateway.networking.k8s.io/v1:Gateway": _gateway,
    "random:index/randomPassword:RandomPassword": _random_password,
}
