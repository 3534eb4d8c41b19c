"""The one public entry of a stack: a Gateway API gateway (Envoy Gateway) behind the cloud's L4 load balancer.

    client --TLS--> cloud L4 load balancer (admits access.endpointCidrs only)
           --> Envoy (envoy-gateway-system, on the system nodes): TLS ends here, HTTP redirects to HTTPS,
               only /v1 is routed, each request goes to the serving pod with the fewest requests in flight,
               split between the stable and the canary revision by weight
           --> serving pod (ClusterIP Service; its network policy admits only these Envoy pods)

Why Envoy Gateway: it implements the Gateway API (the same objects on every cloud, and on any cluster for
`local`), balances per request rather than per connection (LeastRequest, so that an OpenAI client's
keep-alive connection does not pin it to one replica), drains its own pods as the load balancer needs
(`shutdown.minDrainDuration`), and its EnvoyProxy resource sets the load balancer Service's annotations and
source ranges per stack. The cloud-managed gateways (GKE Gateway, AWS ALB, Application Gateway for
Containers) would each need their own objects, limits and TLS plumbing.

Certificates come from cert-manager (an ACME Certificate, proven by DNS-01 in the cloud's DNS zone:
HTTP-01 could not reach an entry restricted to endpointCidrs) or from the stack config's secrets.

Charts are installed as Helm releases, the Gateway API and Envoy Gateway CRDs from their own chart: Helm
applies a chart's `crds/` on first install only, and the CRDs chart keeps them as templates, so a second
`up` with a new version upgrades them too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from pulumi_command import local

from infra import commands, drain
from infra.config import AccessConfig, GatewayConfig
from infra.platform import Platform

# Envoy Gateway v1.9 supports Kubernetes 1.33 to 1.36 and installs Gateway API v1.6 (standard channel here).
ENVOY_GATEWAY_VERSION = "v1.9.1"
ENVOY_GATEWAY_CHART = "oci://docker.io/envoyproxy/gateway-helm"
ENVOY_GATEWAY_CRDS_CHART = "oci://docker.io/envoyproxy/gateway-crds-helm"
ENVOY_GATEWAY_NAMESPACE = "envoy-gateway-system"
ENVOY_GATEWAY_CONTROLLER = "gateway.envoyproxy.io/gatewayclass-controller"
CERT_MANAGER_VERSION = "v1.21.2"
CERT_MANAGER_REPOSITORY = "https://charts.jetstack.io"
CERT_MANAGER_NAMESPACE = "cert-manager"
CERT_MANAGER_SERVICE_ACCOUNT = "cert-manager"

GATEWAY_NAME = "servestack"
# The Envoy Service's fixed name (EG would otherwise derive one from a hash), for `connect` and for destroy.
ENVOY_SERVICE = "servestack-gateway"
TLS_SECRET = "servestack-tls"
ISSUER = "servestack-acme"
ENVOY_REPLICAS = 2
# The server answers 504 to a request still unfinished after 300 s (SERVESTACK_REQUEST_TIMEOUT_SECONDS); the
# route allows a little more, so that clients get the server's answer, not Envoy's. Envoy's own default
# route timeout (15 s) would cut every long answer.
REQUEST_TIMEOUT_SECONDS = 330
# A terminating Envoy pod lets the longest answer finish.
ENVOY_DRAIN_SECONDS = REQUEST_TIMEOUT_SECONDS
# Envoy listens on unprivileged ports: a listener on port N is served by the container's port 10000 + N.
ENVOY_PORT_OFFSET = 10000
# How long `up` waits for the gateway's load balancer, and for an ACME certificate.
GATEWAY_MINUTES = 15
CERTIFICATE_MINUTES = 15
# How long `destroy` waits for Envoy Gateway to delete the load balancer Service it made.
DESTROY_WAIT_SECONDS = 600
SYSTEM_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}


class _ObjectWithStatus(pulumi.CustomResource):
    """A custom resource whose `status` the program reads (apiextensions.CustomResource keeps only its inputs)."""

    status: pulumi.Output[Any]

    def __init__(self, resource_name: str, api_version: str, kind: str, metadata: k8s.meta.v1.ObjectMetaArgs,
                 spec: Any, opts: pulumi.ResourceOptions) -> None:
        super().__init__(f"kubernetes:{api_version}:{kind}", resource_name,
                         {"apiVersion": api_version, "kind": kind, "metadata": metadata, "spec": spec, "status": None},
                         opts)


@dataclass(frozen=True)
class Backend:
    """One Service the API route sends requests to, with its share of them (percent)."""

    service: pulumi.Input[str]
    port: int
    weight: int


@dataclass(frozen=True)
class GatewayArgs:
    gateway: GatewayConfig
    access: AccessConfig
    platform: Platform
    namespace: pulumi.Input[str]
    backends: Sequence[Backend]
    # The Deployments behind the backends: the route changes only once they have rolled out.
    rolled_out: Sequence[pulumi.Resource]


class EntryGateway(pulumi.ComponentResource):
    """Envoy Gateway and its CRDs, cert-manager (ACME), the TLS certificate, the Gateway and its routes."""

    endpoint: pulumi.Output[str]
    # The load balancer's address (a DNS name on AWS, an IP elsewhere): where the hostname's record points.
    address: pulumi.Output[str]
    connect: pulumi.Output[str] | None

    def __init__(self, name: str, args: GatewayArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("servestack:kubernetes:EntryGateway", name, None, opts)
        config, platform = args.gateway, args.platform
        child = pulumi.ResourceOptions(parent=self, provider=platform.k8s_provider)
        after_platform = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=list(platform.ready)))

        crds = k8s.helm.v3.Release(
            f"{name}-gateway-crds",
            name="servestack-gateway-crds",
            chart=ENVOY_GATEWAY_CRDS_CHART,
            version=ENVOY_GATEWAY_VERSION,
            namespace=ENVOY_GATEWAY_NAMESPACE,
            create_namespace=True,
            values={"crds": {"gatewayAPI": {"enabled": True, "channel": "standard"},
                             "envoyGateway": {"enabled": True}}},
            opts=after_platform,
        )
        controller = k8s.helm.v3.Release(
            f"{name}-envoy-gateway",
            name="servestack-envoy-gateway",
            chart=ENVOY_GATEWAY_CHART,
            version=ENVOY_GATEWAY_VERSION,
            namespace=ENVOY_GATEWAY_NAMESPACE,
            values=_envoy_gateway_values(platform),
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[crds])),
        )
        after_controller = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[controller]))
        in_namespace = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[crds]))

        certificate = _certificate(name, args, after_platform, in_namespace)

        envoy_proxy = k8s.apiextensions.CustomResource(
            f"{name}-envoy-proxy",
            api_version="gateway.envoyproxy.io/v1alpha1",
            kind="EnvoyProxy",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=GATEWAY_NAME, namespace=args.namespace),
            spec=_envoy_proxy_spec(args),
            opts=in_namespace,
        )
        gateway_class = k8s.apiextensions.CustomResource(
            f"{name}-gateway-class",
            api_version="gateway.networking.k8s.io/v1",
            kind="GatewayClass",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=GATEWAY_NAME),
            spec={"controllerName": ENVOY_GATEWAY_CONTROLLER,
                  "description": "servestack's entry: Envoy Gateway behind the cloud's L4 load balancer"},
            opts=after_controller,
        )

        # On destroy the Gateway goes first; Envoy Gateway then deletes the load balancer Service it made, and
        # this waits until the cloud has deleted the load balancer (the controller and the cloud's load
        # balancer controller are still there), so that none is left behind the cluster.
        lb_gone = _wait_for_load_balancer_deletion(name, platform, after_controller)
        listeners = _listeners(config)
        annotations = {"pulumi.com/waitFor": "condition=Programmed"}
        gateway = _ObjectWithStatus(
            f"{name}-gateway",
            api_version="gateway.networking.k8s.io/v1",
            kind="Gateway",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=GATEWAY_NAME, namespace=args.namespace, annotations=annotations),
            spec={
                "gatewayClassName": GATEWAY_NAME,
                "infrastructure": {"parametersRef": {"group": "gateway.envoyproxy.io", "kind": "EnvoyProxy",
                                                     "name": GATEWAY_NAME}},
                "listeners": listeners,
            },
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
                depends_on=[gateway_class, envoy_proxy, lb_gone, *certificate],
                custom_timeouts=pulumi.CustomTimeouts(create=f"{GATEWAY_MINUTES}m", update=f"{GATEWAY_MINUTES}m"))),
        )
        gateway_ref = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": GATEWAY_NAME}
        api_listener = "https" if config.https else "http"
        after_gateway = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[gateway]))
        if config.https:
            k8s.apiextensions.CustomResource(
                f"{name}-redirect-route",
                api_version="gateway.networking.k8s.io/v1",
                kind="HTTPRoute",
                metadata=k8s.meta.v1.ObjectMetaArgs(name="servestack-https-redirect", namespace=args.namespace),
                spec={"parentRefs": [{**gateway_ref, "sectionName": "http"}],
                      "rules": [{"filters": [{"type": "RequestRedirect",
                                              "requestRedirect": {"scheme": "https", "statusCode": 301}}]}]},
                opts=after_gateway,
            )
        route = k8s.apiextensions.CustomResource(
            f"{name}-api-route",
            api_version="gateway.networking.k8s.io/v1",
            kind="HTTPRoute",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="servestack", namespace=args.namespace),
            spec=_api_route_spec(args, gateway_ref, api_listener),
            opts=pulumi.ResourceOptions.merge(after_gateway, pulumi.ResourceOptions(
                depends_on=[gateway, *args.rolled_out])),
        )
        k8s.apiextensions.CustomResource(
            f"{name}-api-traffic-policy",
            api_version="gateway.envoyproxy.io/v1alpha1",
            kind="BackendTrafficPolicy",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="servestack", namespace=args.namespace),
            spec=_traffic_policy_spec(),
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[route])),
        )

        self.address = gateway.status.apply(_gateway_address)
        if config.hostname is not None and platform.acme_dns is not None:
            platform.acme_dns.record(f"{name}-dns-record", config.hostname, self.address,
                                     pulumi.ResourceOptions(parent=self))
        scheme, port = ("https", 443) if config.https else ("http", 80)
        host = pulumi.Output.from_input(config.hostname) if config.hostname else self.address.apply(_url_host)
        self.endpoint = host.apply(lambda h: f"{scheme}://{h}" if h else "")
        self.connect = None
        if platform.service_type != "LoadBalancer":
            local_port = 8443 if config.https else 8080
            self.connect = pulumi.Output.from_input(
                f"{platform.kubectl} -n {ENVOY_GATEWAY_NAMESPACE} port-forward service/{ENVOY_SERVICE} "
                f"{local_port}:{port}")
            self.endpoint = pulumi.Output.from_input(f"{scheme}://127.0.0.1:{local_port}")
        self.register_outputs({"endpoint": self.endpoint, "address": self.address})


def _envoy_gateway_values(platform: Platform) -> dict[str, Any]:
    placement = {"nodeSelector": dict(platform.system_node_selector),
                 "tolerations": [_toleration(t) for t in platform.system_tolerations]}
    return {
        # The CRDs come from their own release (the module docstring says why).
        "crds": {"enabled": False},
        "deployment": {"replicas": 2, "pod": placement},
        "podDisruptionBudget": {"minAvailable": 1},
        "certgen": {"job": placement},
    }


def _cert_manager_values(platform: Platform) -> dict[str, Any]:
    acme = platform.acme_dns
    placement = {"nodeSelector": dict(platform.system_node_selector),
                 "tolerations": [_toleration(t) for t in platform.system_tolerations]}
    return {
        # Templates in this chart: `helm upgrade` upgrades them; `keep` leaves them (and so the certificates)
        # when the release goes.
        "crds": {"enabled": True, "keep": True},
        **placement,
        "webhook": placement,
        "cainjector": placement,
        "startupapicheck": placement,
        "serviceAccount": {"annotations": dict(acme.service_account_annotations) if acme else {}},
        "podLabels": dict(acme.pod_labels) if acme else {},
        # The DNS-01 self-check asks public resolvers, not the cluster's (which may see a private view).
        "dns01RecursiveNameserversOnly": True,
        "dns01RecursiveNameservers": "8.8.8.8:53,1.1.1.1:53",
    }


def _toleration(t: Any) -> dict[str, Any]:
    out = {"key": t.key, "operator": t.operator, "effect": t.effect}
    if t.value is not None:
        out["value"] = t.value
    return out


def _certificate(name: str, args: GatewayArgs, after_platform: pulumi.ResourceOptions,
                 in_namespace: pulumi.ResourceOptions) -> list[pulumi.Resource]:
    """The HTTPS listener's certificate, in the Secret TLS_SECRET: from ACME, or from the stack config."""
    config, platform = args.gateway, args.platform
    if config.tls == "secret":
        return [k8s.core.v1.Secret(
            f"{name}-tls",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=TLS_SECRET, namespace=args.namespace),
            type="kubernetes.io/tls",
            string_data={"tls.crt": pulumi.Output.secret(config.certificate or ""),
                         "tls.key": pulumi.Output.secret(config.private_key or "")},
            opts=in_namespace,
        )]
    if config.tls != "acme":
        return []
    acme = platform.acme_dns
    if acme is None or config.hostname is None:
        raise ValueError(f"servestack:gateway.tls: acme, but the {platform.cloud} platform offers no DNS zone for "
                         "the challenge")
    cert_manager = k8s.helm.v3.Release(
        f"{name}-cert-manager",
        name="cert-manager",
        chart="cert-manager",
        repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=CERT_MANAGER_REPOSITORY),
        version=CERT_MANAGER_VERSION,
        namespace=CERT_MANAGER_NAMESPACE,
        create_namespace=True,
        values=_cert_manager_values(platform),
        opts=pulumi.ResourceOptions.merge(after_platform, pulumi.ResourceOptions(depends_on=list(acme.ready))),
    )
    # A ClusterIssuer: cert-manager lets only those use its ambient (workload identity) credentials.
    issuer = k8s.apiextensions.CustomResource(
        f"{name}-issuer",
        api_version="cert-manager.io/v1",
        kind="ClusterIssuer",
        metadata=k8s.meta.v1.ObjectMetaArgs(name=ISSUER),
        spec={"acme": {"server": config.acme_server, "email": config.acme_email,
                       "privateKeySecretRef": {"name": "servestack-acme-account"},
                       "solvers": [{"dns01": dict(acme.solver), "selector": {"dnsNames": [config.hostname]}}]}},
        opts=pulumi.ResourceOptions.merge(in_namespace, pulumi.ResourceOptions(depends_on=[cert_manager])),
    )
    certificate = k8s.apiextensions.CustomResource(
        f"{name}-certificate",
        api_version="cert-manager.io/v1",
        kind="Certificate",
        metadata=k8s.meta.v1.ObjectMetaArgs(name="servestack", namespace=args.namespace,
                                            # `up` waits for the certificate, and fails if ACME refuses it.
                                            annotations={"pulumi.com/waitFor": "condition=Ready"}),
        spec={"secretName": TLS_SECRET, "dnsNames": [config.hostname],
              "issuerRef": {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": ISSUER},
              "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"}},
        opts=pulumi.ResourceOptions.merge(in_namespace, pulumi.ResourceOptions(
            depends_on=[issuer], custom_timeouts=pulumi.CustomTimeouts(create=f"{CERTIFICATE_MINUTES}m",
                                                                       update=f"{CERTIFICATE_MINUTES}m"))),
    )
    return [certificate]


def _envoy_proxy_spec(args: GatewayArgs) -> dict[str, Any]:
    """The Envoy pods and their load balancer Service, as this stack's entry needs them."""
    platform, access = args.platform, args.access
    annotations: dict[str, pulumi.Input[str]] = dict(platform.load_balancer_annotations)
    if access.internal_load_balancer:
        annotations.update(platform.internal_load_balancer_annotations)
    annotations.update(platform.drain_annotations(ENVOY_DRAIN_SECONDS))
    balanced = platform.service_type == "LoadBalancer"
    service: dict[str, Any] = {"name": ENVOY_SERVICE, "type": platform.service_type}
    if balanced:
        # Local: the client's address reaches Envoy (source ranges hold) and no second hop between nodes.
        service.update({"externalTrafficPolicy": "Local", "annotations": annotations or None,
                        "loadBalancerSourceRanges": list(access.endpoint_cidrs) or None})
    pod: dict[str, Any] = {
        "nodeSelector": dict(platform.system_node_selector) or None,
        "tolerations": [_toleration(t) for t in platform.system_tolerations] or None,
        "topologySpreadConstraints": [{
            "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"gateway.envoyproxy.io/owning-gateway-name": GATEWAY_NAME}}}],
    }
    return {
        "provider": {"type": "Kubernetes", "kubernetes": {
            "envoyDeployment": {
                "replicas": ENVOY_REPLICAS,
                "pod": {k: v for k, v in pod.items() if v is not None},
                "container": {"resources": {"requests": {"cpu": "250m", "memory": "256Mi"},
                                            "limits": {"memory": "1Gi"}}},
            },
            "envoyPDB": {"maxUnavailable": 1},
            "envoyService": {k: v for k, v in service.items() if v is not None},
        }},
        # A terminating Envoy keeps accepting until the load balancer has failed it out, then lets the answers
        # in flight finish.
        "shutdown": {"minDrainDuration": f"{drain.envoy_min_drain_seconds(platform.cloud)}s",
                     "drainTimeout": f"{ENVOY_DRAIN_SECONDS}s"},
    }


def _listeners(config: GatewayConfig) -> list[dict[str, Any]]:
    hostname = {"hostname": config.hostname} if config.hostname else {}
    same_namespace = {"namespaces": {"from": "Same"}}
    listeners = [{"name": "http", "port": 80, "protocol": "HTTP", **hostname, "allowedRoutes": same_namespace}]
    if config.https:
        listeners.append({"name": "https", "port": 443, "protocol": "HTTPS", **hostname,
                          "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": TLS_SECRET}]},
                          "allowedRoutes": same_namespace})
    return listeners


def _api_route_spec(args: GatewayArgs, gateway_ref: dict[str, str], listener: str) -> dict[str, Any]:
    """Only the OpenAI API (/v1) is routed: health, metrics and anything else stay inside the cluster."""
    backends = [{"kind": "Service", "name": b.service, "port": b.port, "weight": b.weight} for b in args.backends]
    spec: dict[str, Any] = {
        "parentRefs": [{**gateway_ref, "sectionName": listener}],
        "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
                   "backendRefs": backends,
                   "timeouts": {"request": f"{REQUEST_TIMEOUT_SECONDS}s"}}],
    }
    if args.gateway.hostname:
        spec["hostnames"] = [args.gateway.hostname]
    return spec


def _traffic_policy_spec() -> dict[str, Any]:
    return {
        "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "servestack"}],
        # Per request, to the pod with the fewest requests in flight: with streamed answers, that is its queue.
        "loadBalancer": {"type": "LeastRequest"},
        # A pod that is starting, draining or gone answers 503 or refuses the connection before any work is
        # done: another pod may take the request.
        "retry": {"numRetries": 2,
                  "retryOn": {"triggers": ["connect-failure", "refused-stream", "reset-before-request",
                                           "retriable-status-codes"],
                              "httpStatusCodes": [503]},
                  "perRetry": {"backOff": {"baseInterval": "100ms", "maxInterval": "1s"}}},
    }


def _wait_for_load_balancer_deletion(name: str, platform: Platform,
                                     opts: pulumi.ResourceOptions) -> local.Command:
    """A command with nothing to do on create, and on delete a bounded wait until the Envoy Service is gone."""
    def gone(kubectl: str) -> str:
        return commands.bounded_wait(
            f'test -z "$({kubectl} -n {ENVOY_GATEWAY_NAMESPACE} get service {ENVOY_SERVICE} '
            '--ignore-not-found -o name)"',
            waiting=waiting, failed=failed, timeout_seconds=DESTROY_WAIT_SECONDS)

    waiting = "waiting for Envoy Gateway and the cloud to delete the gateway's load balancer"
    failed = (f"the load balancer Service {ENVOY_GATEWAY_NAMESPACE}/{ENVOY_SERVICE} is still there after "
              f"{DESTROY_WAIT_SECONDS // 60} minutes; delete it (kubectl -n {ENVOY_GATEWAY_NAMESPACE} delete service "
              f"{ENVOY_SERVICE}), then run `pulumi destroy` again")
    text = "KUBECONFIG_TEXT" if platform.kubeconfig is not None else None
    script = commands.with_kubectl(text, platform.kubectl, gone)
    environment = {"KUBECONFIG_TEXT": platform.kubeconfig} if platform.kubeconfig is not None else None
    return local.Command(f"{name}-load-balancer-gone", create="true", delete=script, environment=environment,
                         opts=opts)


def _gateway_address(status: Any) -> str:
    """The load balancer's address, as Envoy Gateway copies it into the Gateway's status."""
    addresses = (status or {}).get("addresses") or []
    return str(addresses[0].get("value", "")) if addresses else ""


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address
