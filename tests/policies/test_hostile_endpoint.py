"""Hostile endpoint cases: plain HTTP on public Services, Ingresses, Gateways, AWS listeners, GCP forwarding
rules, Application Gateways and Front Door routes, and serving servers whose API key is off; and the look-alikes
that must pass (an internal endpoint, TLS at the load balancer, HTTP that only redirects to HTTPS)."""

from __future__ import annotations

from typing import Any

import pytest
from pulumi_policy import PolicyResource
from pulumi_policy.proxy import UNKNOWN_BOOLEAN_VALUE, UNKNOWN_STRING_VALUE

from tests.policies.harness import Case, StackCase, assert_case, assert_stack_case, stack_resource

TLS, KEY = "public-endpoint-tls", "serving-api-key-required"
SERVICE, SERVICE_PATCH = "kubernetes:core/v1:Service", "kubernetes:core/v1:ServicePatch"
INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
GATEWAY = "kubernetes:gateway.networking.k8s.io/v1:Gateway"
ROUTE = "kubernetes:gateway.networking.k8s.io/v1:HTTPRoute"
LB, LISTENER = "aws:lb/loadBalancer:LoadBalancer", "aws:lb/listener:Listener"
LISTENER_RULE = "aws:lb/listenerRule:ListenerRule"
FORWARDING = "gcp:compute/globalForwardingRule:GlobalForwardingRule"
HTTP_PROXY, URL_MAP = "gcp:compute/targetHttpProxy:TargetHttpProxy", "gcp:compute/uRLMap:URLMap"
APP_GATEWAY, FRONT_DOOR = "azure-native:network:ApplicationGateway", "azure-native:cdn:Route"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
AWS = "service.beta.kubernetes.io/aws-load-balancer"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/servestack-aws-prod/servestack-serving:0.1.0"


def service(*ports: dict[str, Any], annotations: dict[str, str] | None = None, kind: str = "LoadBalancer",
            name: str = "web") -> PolicyResource:
    return stack_resource(SERVICE, name, {
        "metadata": {"name": name, "namespace": "servestack", "annotations": annotations or {}},
        "spec": {"type": kind, "ports": list(ports) or [{"name": "http", "port": 80.0, "targetPort": "http"}],
                 "loadBalancerSourceRanges": ["203.0.113.0/24"]}})


def ingress(annotations: dict[str, str] | None = None, tls: bool = False, cls: str | None = None) -> PolicyResource:
    spec: dict[str, Any] = {"rules": [{"http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {
        "service": {"name": "servestack", "port": {"number": 80.0}}}}]}}]}
    if tls:
        spec["tls"] = [{"hosts": ["api.example.com"], "secretName": "api-tls"}]
    if cls is not None:
        spec["ingressClassName"] = cls
    return stack_resource(INGRESS, "web", {"metadata": {"name": "web", "namespace": "servestack",
                                                        "annotations": annotations or {}}, "spec": spec})


def gateway(*listeners: dict[str, Any], cls: str = "gke-l7-global-external-managed") -> PolicyResource:
    return stack_resource(GATEWAY, "gw", {"metadata": {"name": "gw", "namespace": "edge"},
                                          "spec": {"gatewayClassName": cls, "listeners": list(listeners)}})


def route(name: str, redirect: bool, section: str | None = "http", namespace: str = "edge") -> PolicyResource:
    rule: dict[str, Any] = {"filters": [{"type": "RequestRedirect",
                                         "requestRedirect": {"scheme": "https", "statusCode": 301}}]} if redirect else {
        "backendRefs": [{"name": "servestack", "port": 80}]}
    ref: dict[str, Any] = {"name": "gw", "namespace": "edge"}
    if section is not None:
        ref["sectionName"] = section
    return stack_resource(ROUTE, name, {"metadata": {"name": name, "namespace": namespace},
                                        "spec": {"parentRefs": [ref], "rules": [rule]}})


HTTP_LISTENER = {"name": "http", "protocol": "HTTP", "port": 80}
HTTPS_LISTENER = {"name": "https", "protocol": "HTTPS", "port": 443, "tls": {"certificateRefs": [{"name": "api"}]}}


def aws(internal: Any = False, protocol: str | None = "HTTP", port: float = 80.0,
        actions: list[dict[str, Any]] | None = None, lb_type: str = "application",
        rules: list[list[dict[str, Any]]] = ()) -> list[PolicyResource]:
    balancer = stack_resource(LB, "alb", {"internal": internal, "loadBalancerType": lb_type})
    props: dict[str, Any] = {"port": port, "defaultActions": actions or [{"type": "forward", "targetGroupArn": "tg"}]}
    if protocol is not None:
        props["protocol"] = protocol
    listener = stack_resource(LISTENER, "listener", props, deps=[balancer],
                              property_deps={"loadBalancerArn": [balancer]})
    extra = [stack_resource(LISTENER_RULE, f"rule{i}", {"actions": a}, deps=[listener],
                            property_deps={"listenerArn": [listener]}) for i, a in enumerate(rules)]
    return [balancer, listener, *extra]


REDIRECT = [{"type": "redirect", "redirect": {"protocol": "HTTPS", "port": "443", "statusCode": "HTTP_301"}}]


def gcp(url_map: dict[str, Any], scheme: str | None = "EXTERNAL_MANAGED") -> list[PolicyResource]:
    mapping = stack_resource(URL_MAP, "map", url_map)
    proxy = stack_resource(HTTP_PROXY, "proxy", {"urlMap": "map"}, deps=[mapping], property_deps={"urlMap": [mapping]})
    props: dict[str, Any] = {"target": "proxy", "portRange": "80"}
    if scheme is not None:
        props["loadBalancingScheme"] = scheme
    rule = stack_resource(FORWARDING, "http", props, deps=[proxy], property_deps={"target": [proxy]})
    return [mapping, proxy, rule]


def app_gateway(public: bool = True, redirect_to: str | None = "https", url: str | None = None) -> list[PolicyResource]:
    base = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/applicationGateways/agw"
    frontend: dict[str, Any] = {"name": "fe"}
    if public:
        frontend["publicIPAddress"] = {"id": "/subscriptions/s/.../publicIPAddresses/agw"}
    else:
        frontend["privateIPAddress"] = "10.0.0.10"
    rule: dict[str, Any] = {"name": "http", "httpListener": {"id": f"{base}/httpListeners/http"}}
    redirects = []
    if redirect_to is not None or url is not None:
        rule["redirectConfiguration"] = {"id": f"{base}/redirectConfigurations/to-https"}
        redirect: dict[str, Any] = {"name": "to-https", "redirectType": "Permanent"}
        if redirect_to is not None:
            redirect["targetListener"] = {"id": f"{base}/httpListeners/{redirect_to}"}
        if url is not None:
            redirect["targetUrl"] = url
        redirects.append(redirect)
    else:
        rule["backendAddressPool"] = {"id": f"{base}/backendAddressPools/pool"}
    return [stack_resource(APP_GATEWAY, "agw", {
        "frontendIPConfigurations": [frontend],
        "httpListeners": [{"name": name, "protocol": protocol,
                           "frontendIPConfiguration": {"id": f"{base}/frontendIPConfigurations/fe"}}
                          for name, protocol in (("http", "Http"), ("https", "Https"))],
        "requestRoutingRules": [rule], "redirectConfigurations": redirects})]


STACK_CASES = [
    # --- Services ---
    StackCase("service-http-port-80", lambda: [service()], "violation", "port(s) 80 (http)"),
    StackCase("service-unnamed-port-8000", lambda: [service({"port": 8000.0, "targetPort": 8000.0})], "violation",
              "8000"),
    StackCase("service-https-and-http",
              lambda: [service({"name": "https", "port": 443.0}, {"name": "http", "port": 80.0})], "violation",
              "80 (http)"),
    StackCase("service-aws-cert-on-443-only", lambda: [service(
        {"name": "https", "port": 443.0}, {"name": "http", "port": 80.0},
        annotations={f"{AWS}-ssl-cert": "arn:aws:acm:us-east-1:1:certificate/x", f"{AWS}-ssl-ports": "443"})],
        "violation", "80"),
    StackCase("service-aws-scheme-internet-facing", lambda: [service(annotations={
        f"{AWS}-type": "external", f"{AWS}-scheme": "internet-facing"})], "violation"),
    StackCase("service-patch-makes-http-lb", lambda: [stack_resource(SERVICE_PATCH, "web", {
        "metadata": {"name": "web"}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80.0}]}})], "unknown",
        "live service"),
    StackCase("service-port-unknown", lambda: [service({"name": "http", "port": UNKNOWN_STRING_VALUE})], "unknown"),
    StackCase("service-aws-cert-all-ports", lambda: [service(
        annotations={f"{AWS}-ssl-cert": "arn:aws:acm:us-east-1:1:certificate/x"})], "pass"),
    StackCase("service-https-port", lambda: [service({"name": "https", "port": 443.0, "targetPort": 8443.0})], "pass"),
    StackCase("service-app-protocol-https", lambda: [service({"name": "api", "port": 8443.0, "appProtocol": "https"})],
              "pass"),
    StackCase("service-internal-gke",
              lambda: [service(annotations={"networking.gke.io/load-balancer-type": "Internal"})], "pass"),
    StackCase("service-internal-azure", lambda: [service(
        annotations={"service.beta.kubernetes.io/azure-load-balancer-internal": "true"})], "pass"),
    StackCase("service-cluster-ip", lambda: [service(kind="ClusterIP")], "pass"),
    StackCase("service-exempt", lambda: [service()], "pass", "",
              {"exemptions": [{"resource": "web", "reason": "TLS arrives with the gateway of issue 8"}]}),
    StackCase("service-exempt-without-reason", lambda: [service()], "violation", "no reason",
              {"exemptions": [{"resource": "web", "reason": " "}]}),
    # --- Ingress ---
    StackCase("ingress-without-tls", lambda: [ingress(cls="nginx")], "violation", "no spec.tls"),
    StackCase("ingress-nginx-redirect-off", lambda: [ingress(
        {"nginx.ingress.kubernetes.io/ssl-redirect": "false"}, tls=True, cls="nginx")], "violation", "ssl-redirect"),
    StackCase("ingress-alb-internet-facing-http", lambda: [ingress(
        {"alb.ingress.kubernetes.io/scheme": "internet-facing",
         "alb.ingress.kubernetes.io/listen-ports": '[{"HTTP": 80}, {"HTTPS": 443}]'}, cls="alb")], "violation",
        "HTTP port(s) [80]"),
    StackCase("ingress-gke-default-class-serves-http", lambda: [
        ingress(tls=True), stack_resource("gcp:container/cluster:Cluster", "gke", {"location": "us-central1"})],
        "violation", "GKE serves it on HTTP"),
    StackCase("ingress-agic-without-redirect", lambda: [ingress(tls=True, cls="azure-application-gateway")],
              "violation"),
    StackCase("ingress-nginx-tls", lambda: [ingress(tls=True, cls="nginx")], "pass"),
    StackCase("ingress-alb-internal-by-default", lambda: [ingress(cls="alb")], "pass"),
    StackCase("ingress-alb-redirect", lambda: [ingress(
        {"alb.ingress.kubernetes.io/scheme": "internet-facing", "alb.ingress.kubernetes.io/ssl-redirect": "443",
         "alb.ingress.kubernetes.io/listen-ports": '[{"HTTP": 80}, {"HTTPS": 443}]'}, cls="alb")], "pass"),
    StackCase("ingress-gke-http-off", lambda: [ingress({"kubernetes.io/ingress.allow-http": "false"}, tls=True,
                                                       cls="gce")], "pass"),
    StackCase("ingress-gke-frontend-config-redirects", lambda: [
        ingress({"networking.gke.io/v1beta1.FrontendConfig": "redirect"}, tls=True, cls="gce"),
        stack_resource("kubernetes:networking.gke.io/v1beta1:FrontendConfig", "redirect", {
            "metadata": {"name": "redirect", "namespace": "servestack"},
            "spec": {"redirectToHttps": {"enabled": True}}})], "pass"),
    StackCase("ingress-gke-internal", lambda: [ingress(cls="gce-internal")], "pass"),
    # --- Gateway API ---
    StackCase("gateway-http-listener-no-route", lambda: [gateway(HTTP_LISTENER, HTTPS_LISTENER)], "violation",
              "listener http"),
    StackCase("gateway-http-route-serves", lambda: [gateway(HTTP_LISTENER, HTTPS_LISTENER), route("api", False)],
              "violation"),
    StackCase("gateway-one-redirect-one-serving-route", lambda: [
        gateway(HTTP_LISTENER, HTTPS_LISTENER), route("redirect", True), route("api", False, section=None)],
        "violation"),
    StackCase("gateway-tcp-80", lambda: [gateway({"name": "raw", "protocol": "TCP", "port": 80})], "violation", "TCP"),
    StackCase("gateway-redirect-route", lambda: [gateway(HTTP_LISTENER, HTTPS_LISTENER), route("redirect", True),
                                                 route("api", False, section="https")], "pass"),
    StackCase("gateway-https-only", lambda: [gateway(HTTPS_LISTENER)], "pass"),
    StackCase("gateway-internal-class", lambda: [gateway(HTTP_LISTENER, cls="gke-l7-rilb")], "pass"),
    StackCase("gateway-class-unknown", lambda: [gateway(HTTP_LISTENER, cls=UNKNOWN_STRING_VALUE)], "unknown"),
    # --- AWS listeners ---
    StackCase("alb-http-forward", lambda: aws(), "violation", "serves plain HTTP"),
    StackCase("alb-protocol-left-out", lambda: aws(protocol=None), "violation"),
    StackCase("alb-redirect-plus-forward-rule", lambda: aws(actions=REDIRECT,
                                                            rules=[[{"type": "forward", "targetGroupArn": "tg"}]]),
              "violation"),
    StackCase("nlb-tcp-80", lambda: aws(protocol="TCP", lb_type="network"), "violation", "TCP on port 80"),
    StackCase("alb-internal-unknown", lambda: aws(internal=UNKNOWN_BOOLEAN_VALUE), "unknown"),
    StackCase("alb-http-redirects", lambda: aws(actions=REDIRECT), "pass"),
    StackCase("alb-https", lambda: aws(protocol="HTTPS", port=443.0), "pass"),
    StackCase("alb-internal-http", lambda: aws(internal=True), "pass"),
    StackCase("nlb-tls", lambda: aws(protocol="TLS", port=443.0, lb_type="network"), "pass"),
    StackCase("nlb-tcp-443-passthrough", lambda: aws(protocol="TCP", port=443.0, lb_type="network"), "pass"),
    # --- GCP forwarding rules ---
    StackCase("gcp-http-proxy-serves", lambda: gcp({"defaultService": "backend"}), "violation", "HTTP proxy"),
    StackCase("gcp-http-proxy-scheme-left-out", lambda: gcp({"defaultService": "backend"}, scheme=None), "violation"),
    StackCase("gcp-redirect-with-path-matcher", lambda: gcp({
        "defaultUrlRedirect": {"httpsRedirect": True}, "pathMatchers": [{"name": "api", "defaultService": "b"}]}),
        "violation"),
    StackCase("gcp-l4-port-80", lambda: [stack_resource(
        "gcp:compute/forwardingRule:ForwardingRule", "l4", {"backendService": "bs", "ports": ["80"],
                                                            "loadBalancingScheme": "EXTERNAL"})], "violation", "80"),
    StackCase("gcp-l4-all-ports", lambda: [stack_resource(
        "gcp:compute/forwardingRule:ForwardingRule", "l4", {"backendService": "bs", "allPorts": True})], "violation"),
    StackCase("gcp-redirect-map", lambda: gcp({"defaultUrlRedirect": {"httpsRedirect": True,
                                                                      "stripQuery": False}}), "pass"),
    StackCase("gcp-internal-managed", lambda: gcp({"defaultService": "backend"}, scheme="INTERNAL_MANAGED"), "pass"),
    StackCase("gcp-https-proxy", lambda: [stack_resource(FORWARDING, "https", {
        "target": "projects/p/global/targetHttpsProxies/api", "portRange": "443"})], "pass"),
    StackCase("gcp-url-map-outside-the-stack", lambda: [stack_resource(FORWARDING, "http", {
        "target": "projects/p/global/targetHttpProxies/api", "portRange": "80"})], "unknown", "not in the stack"),
    # --- Azure ---
    StackCase("app-gateway-http-to-backend", lambda: app_gateway(redirect_to=None), "violation", "listener http"),
    StackCase("app-gateway-redirect-to-http-url", lambda: app_gateway(redirect_to=None, url="http://example.com"),
              "violation"),
    StackCase("app-gateway-redirects-to-https-listener", lambda: app_gateway(), "pass"),
    StackCase("app-gateway-redirects-to-https-url", lambda: app_gateway(redirect_to=None, url="https://api.example.com"),
              "pass"),
    StackCase("app-gateway-private-frontend", lambda: app_gateway(public=False, redirect_to=None), "pass"),
    StackCase("front-door-http-no-redirect", lambda: [stack_resource(FRONT_DOOR, "route", {
        "supportedProtocols": ["Http", "Https"], "httpsRedirect": "Disabled"})], "violation", "httpsRedirect"),
    StackCase("front-door-protocols-left-out", lambda: [stack_resource(FRONT_DOOR, "route", {})], "violation"),
    StackCase("front-door-redirect", lambda: [stack_resource(FRONT_DOOR, "route", {
        "supportedProtocols": ["Http", "Https"], "httpsRedirect": "Enabled"})], "pass"),
    StackCase("front-door-https-only", lambda: [stack_resource(FRONT_DOOR, "route", {
        "supportedProtocols": ["Https"], "httpsRedirect": "Disabled"})], "pass"),
]


@pytest.mark.parametrize("case", STACK_CASES, ids=[c.id for c in STACK_CASES])
def test_hostile_endpoint_stack_case(case: StackCase) -> None:
    assert_stack_case(TLS, case)


def test_stack_case_ids_are_unique() -> None:
    assert len({c.id for c in STACK_CASES}) == len(STACK_CASES)


# --- serving-api-key-required ---------------------------------------------------------------------------


def server(*env: dict[str, Any], image: str = IMAGE, command: list[str] | None = None, **more: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "server", "image": image,
                                 "env": [{"name": "MODEL_PATH", "value": "/models/tiny"}, *env], **more}
    if command is not None:
        container["command"] = command
    return {"metadata": {"name": "servestack", "namespace": "servestack"},
            "spec": {"template": {"spec": {"containers": [container]}}}}


def keys_file(path: str = "/etc/servestack/api-keys/api-keys.json", optional: bool | None = None,
              volume: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A server reading its keys file from a volume, as servestack's pods do (a Secret volume by default)."""
    secret: dict[str, Any] = {"secretName": "servestack-api-keys"}
    if optional is not None:
        secret["optional"] = optional
    spec = server({"name": "SERVESTACK_API_KEYS_FILE", "value": path}, *([extra] if extra else []),
                  volumeMounts=[{"name": "api-keys", "mountPath": "/etc/servestack/api-keys", "readOnly": True}])
    spec["spec"]["template"]["spec"]["volumes"] = [{"name": "api-keys", **(volume or {"secret": secret})}]
    return spec


FROM_SECRET = {"name": "SERVESTACK_API_KEY",
               "valueFrom": {"secretKeyRef": {"name": "servestack-api-key", "key": "api-key"}}}

CASES = [
    Case("key-missing", KEY, DEPLOYMENT, server(), "violation", "not set"),
    Case("key-empty", KEY, DEPLOYMENT, server({"name": "SERVESTACK_API_KEY", "value": ""}), "violation",
         "empty value"),
    Case("key-optional-secret", KEY, DEPLOYMENT,
         server({"name": "SERVESTACK_API_KEY", "valueFrom": {"secretKeyRef": {
             "name": "servestack-api-key", "key": "api-key", "optional": True}}}), "violation", "optional: true"),
    Case("key-overridden-by-a-later-empty-entry", KEY, DEPLOYMENT,
         server(FROM_SECRET, {"name": "SERVESTACK_API_KEY", "value": ""}), "violation", "empty"),
    Case("key-lower-case-name-empty", KEY, DEPLOYMENT, server(FROM_SECRET, {"name": "servestack_api_key", "value": ""}),
         "violation"),
    Case("key-as-plain-text", KEY, DEPLOYMENT, server({"name": "SERVESTACK_API_KEY", "value": "s3cr3t"}), "violation",
         "plain text"),
    Case("key-from-config-map", KEY, DEPLOYMENT,
         server({"name": "SERVESTACK_API_KEY", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}),
         "violation", "configMapKeyRef"),
    Case("server-found-by-environment", KEY, "kubernetes:apps/v1:StatefulSet",
         server(image="ghcr.io/acme/llm:1.0"), "violation"),
    Case("server-found-by-image-digest", KEY, "kubernetes:core/v1:Pod",
         {"spec": {"containers": [{"name": "s", "image": "registry.local/servestack-serving@sha256:" + "a" * 64}]}},
         "violation"),
    Case("deployment-patch-empties-key", KEY, "kubernetes:apps/v1:DeploymentPatch",
         server({"name": "SERVESTACK_API_KEY", "value": ""}), "violation"),
    Case("key-may-come-from-env-from", KEY, DEPLOYMENT, server(envFrom=[{"secretRef": {"name": "settings"}}]),
         "unknown", "envFrom"),
    Case("key-from-secret", KEY, DEPLOYMENT, server(FROM_SECRET), "pass"),
    Case("keys-file-from-a-secret-volume", KEY, DEPLOYMENT, keys_file(), "pass"),
    Case("keys-file-from-an-optional-secret", KEY, DEPLOYMENT, keys_file(optional=True), "violation",
         "optional: true"),
    Case("keys-file-from-a-config-map", KEY, DEPLOYMENT, keys_file(volume={"configMap": {"name": "keys"}}),
         "violation", "not a Secret"),
    Case("keys-file-outside-any-volume", KEY, DEPLOYMENT, keys_file(path="/tmp/api-keys.json"), "violation",
         "no volume of a Secret provides"),
    Case("keys-file-empty", KEY, DEPLOYMENT, keys_file(path=""), "violation", "empty"),
    Case("keys-file-beside-a-plain-text-key", KEY, DEPLOYMENT,
         keys_file(extra={"name": "SERVESTACK_API_KEY", "value": "s3cr3t"}), "violation", "plain text"),
    Case("deployment-patch-leaves-env-alone", KEY, "kubernetes:apps/v1:DeploymentPatch",
         server({"name": "SERVESTACK_MAX_BATCH_SIZE", "value": "8"}), "pass"),
    Case("fetch-init-style-container", KEY, "kubernetes:batch/v1:Job",
         {"spec": {"template": {"spec": {"containers": [
             {"name": "fetch", "image": IMAGE,
              "command": ["python", "-m", "serving.fetch", "s3://m", "/models/m"]}]}}}},
         "pass"),
    Case("other-workload", KEY, DEPLOYMENT,
         {"spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}}}}, "pass"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_api_key_case(case: Case) -> None:
    assert_case(case)


def test_case_ids_are_unique() -> None:
    assert len({c.id for c in CASES}) == len(CASES)
