"""The cloud load balancers a stack's Kubernetes objects make: whether a LoadBalancer Service is internal on
its cloud, and the Service a Gateway's controller (Envoy Gateway) makes for it."""

from __future__ import annotations

from typing import Any

from reading import values as v
from reading.resources import Resource

# Annotations that make a LoadBalancer service internal on GKE and AKS.
INTERNAL_LB = {
    "networking.gke.io/load-balancer-type": ("internal",),
    "cloud.google.com/load-balancer-type": ("internal",),
    "service.beta.kubernetes.io/azure-load-balancer-internal": ("true",),
}
AWS_LB = "service.beta.kubernetes.io/aws-load-balancer"
GATEWAY = "kubernetes:gateway.networking.k8s.io/v1:Gateway"
ENVOY_PROXY = "kubernetes:gateway.envoyproxy.io/v1alpha1:EnvoyProxy"


def gateway_service(gateway: Resource, resources: list[Resource]) -> dict[str, Any]:
    """The Service the gateway controller (Envoy Gateway) makes for a Gateway, as the EnvoyProxy its infrastructure
    names describes it (`type`, `annotations`, `loadBalancerSourceRanges`, ...); a LoadBalancer, Envoy Gateway's
    default, where nothing says otherwise."""
    ref = v.dig(gateway.props, "spec", "infrastructure", "parametersRef")
    if isinstance(ref, dict) and ref.get("kind") == "EnvoyProxy":
        for proxy in resources:
            if (proxy.type == ENVOY_PROXY and v.dig(proxy.props, "metadata", "name") == ref.get("name")
                    and proxy.namespace in (None, gateway.namespace)):
                service = v.dig(proxy.props, "spec", "provider", "kubernetes", "envoyService")
                if isinstance(service, dict):
                    return {"type": "LoadBalancer", **{k: x for k, x in service.items() if x is not None}}
    return {"type": "LoadBalancer"}


def internal_load_balancer(annotations: dict[str, Any], spec: dict[str, Any]) -> bool:
    """Whether a LoadBalancer Service's cloud makes it internal (a private address, no public one)."""
    if _aws_internal(annotations, spec):
        return True
    return any(isinstance(annotations.get(key), str) and annotations[key].strip().lower() in values
               for key, values in INTERNAL_LB.items())


def _aws_internal(annotations: dict[str, Any], spec: dict[str, Any]) -> bool:
    """Whether AWS makes this LoadBalancer service internal.

    The AWS Load Balancer Controller takes the services with `aws-load-balancer-type: external` (or
    `nlb-ip`, or loadBalancerClass service.k8s.aws/nlb); for them an `aws-load-balancer-scheme`
    annotation decides, over the legacy `aws-load-balancer-internal`. Other services go to the cloud
    controller manager, which ignores the scheme annotation and reads only `aws-load-balancer-internal`.
    """
    kind = annotations.get(f"{AWS_LB}-type")
    controller = (isinstance(kind, str) and kind.strip().lower() in ("external", "nlb-ip")) or (
        spec.get("loadBalancerClass") == "service.k8s.aws/nlb")
    scheme = annotations.get(f"{AWS_LB}-scheme")
    if controller and isinstance(scheme, str):
        return scheme.strip().lower() == "internal"
    internal = annotations.get(f"{AWS_LB}-internal")
    return isinstance(internal, str) and internal.strip().lower() in ("true", "0.0.0.0/0")
