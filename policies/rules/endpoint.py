"""How the endpoint is served: plain HTTP on public load balancers, and a serving server without its API key.

`public-endpoint-tls` (a stack rule, so that it can follow a listener to its load balancer and a proxy to
its URL map) reads every way the stacks' clouds and Kubernetes put an endpoint on the internet:

- a public `LoadBalancer` Service (internal by the cloud's annotation as `k8s-loadbalancer-restricted`
  reads it): each port must carry TLS: the AWS `aws-load-balancer-ssl-cert` annotation (for the ports in
  `aws-load-balancer-ssl-ports`, all by default), `appProtocol` https or tls, a port named https or tls,
  or a port listed in `tlsPorts` (443: passed through to a backend that terminates TLS);
- an Ingress: the AWS Load Balancer Controller's (internet-facing only; HTTP listen ports need
  `ssl-redirect`), GKE's (HTTP is served unless `kubernetes.io/ingress.allow-http` is false or a
  FrontendConfig of the stack redirects), the Application Gateway controller's (needs TLS and
  `ssl-redirect`), others (needs `spec.tls`; NGINX's redirect must stay on);
- a Gateway API Gateway whose class is not internal: an HTTP listener passes only when the stack's
  HTTPRoutes attached to it all redirect to https; TCP and UDP listeners as L4 ports above;
- AWS ALB/NLB listeners of a load balancer that is not `internal` (HTTP passes when its default actions
  and listener rules only redirect to HTTPS or answer with a fixed response); GCP external forwarding rules
  to an HTTP proxy whose URL map does not redirect every request to HTTPS, or L4 rules on ports outside
  `tlsPorts`; Azure Application Gateway HTTP listeners on a public frontend whose routing rules do not
  redirect to an HTTPS listener or URL; Azure Front Door routes that accept HTTP without `httpsRedirect`.

A patch (`ServicePatch`, `IngressPatch`) is judged on what it sets: where the outcome depends on what
the live object keeps, the rule reports "cannot verify".

`serving-api-key-required` finds the serving server's containers (by image, or by the server's own
environment variables) and requires API keys: a keys file (SERVESTACK_API_KEYS_FILE) inside a volume
mounted from a Secret that is not optional, or else SERVESTACK_API_KEY from a Secret: present, non-empty,
not optional, and not overridden by a later entry. The server reads its settings without regard to case.

Both are advisory; the stack's policy config makes them mandatory in prod (`stack_config.py`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from pulumi_policy import EnforcementLevel, Severity

from policies.rules.common import Judge, Rule
from policies.rules.kubernetes import PATCHES, SERVICE, SERVICE_PATCH, WORKLOADS, containers, pod_spec
from reading import values as v
from reading.load_balancers import AWS_LB, internal_load_balancer
from reading.resources import Resource
from reading.values import BadValue, Unknown

INGRESSES = frozenset(f"kubernetes:networking.k8s.io/{version}:Ingress{suffix}"
                      for version in ("v1", "v1beta1") for suffix in ("", "Patch"))
GATEWAYS = frozenset(f"kubernetes:gateway.networking.k8s.io/{version}:Gateway" for version in ("v1", "v1beta1"))
HTTP_ROUTES = frozenset(f"kubernetes:gateway.networking.k8s.io/{version}:HTTPRoute" for version in ("v1", "v1beta1"))
FRONTEND_CONFIG = "kubernetes:networking.gke.io/v1beta1:FrontendConfig"
GKE_CLUSTER = "gcp:container/cluster:Cluster"
AWS_LISTENERS = frozenset({"aws:lb/listener:Listener", "aws:alb/listener:Listener"})
AWS_LISTENER_RULES = frozenset({"aws:lb/listenerRule:ListenerRule", "aws:alb/listenerRule:ListenerRule"})
AWS_LOAD_BALANCERS = frozenset({"aws:lb/loadBalancer:LoadBalancer", "aws:alb/loadBalancer:LoadBalancer"})
GCP_FORWARDING_RULES = frozenset({"gcp:compute/globalForwardingRule:GlobalForwardingRule",
                                  "gcp:compute/forwardingRule:ForwardingRule"})
GCP_HTTP_PROXIES = frozenset({"gcp:compute/targetHttpProxy:TargetHttpProxy",
                              "gcp:compute/regionTargetHttpProxy:RegionTargetHttpProxy"})
GCP_URL_MAPS = frozenset({"gcp:compute/uRLMap:URLMap", "gcp:compute/regionUrlMap:RegionUrlMap"})
AZURE_APP_GATEWAY = "azure-native:network:ApplicationGateway"
AZURE_FRONT_DOOR_ROUTE = "azure-native:cdn:Route"
ENDPOINT_TYPES = frozenset({SERVICE, SERVICE_PATCH, *INGRESSES, *GATEWAYS, *HTTP_ROUTES, FRONTEND_CONFIG,
                            *AWS_LISTENERS, *AWS_LISTENER_RULES, *AWS_LOAD_BALANCERS, *GCP_FORWARDING_RULES,
                            *GCP_HTTP_PROXIES, *GCP_URL_MAPS, AZURE_APP_GATEWAY, AZURE_FRONT_DOOR_ROUTE})
ALB = "alb.ingress.kubernetes.io"
INTERNAL_GATEWAY_CLASS_WORDS = ("rilb", "internal", "private")
TLS_NAMES = ("https", "tls")
FIX = ("Terminate TLS in front of it (an Ingress or Gateway with a certificate that redirects HTTP to HTTPS, or a "
       "TLS listener), or make it internal.")


class Stack:
    """The stack's resources, found by URN and by what a resource's inputs point at."""

    def __init__(self, resources: list[Resource]) -> None:
        self.resources = resources
        self.by_urn = {r.urn: r for r in resources}

    def linked(self, resource: Resource, key: str, types: Iterable[str]) -> list[Resource]:
        """The resources of these types that input `key` comes from; without property dependencies, the
        plain dependencies of these types."""
        wanted = frozenset(types)
        urns = [u for u in resource.property_dependencies.get(key, ()) if u in self.by_urn]
        if not urns:
            urns = list(resource.dependencies)
        return [self.by_urn[u] for u in urns if u in self.by_urn and self.by_urn[u].type in wanted]

    def of(self, types: Iterable[str]) -> list[Resource]:
        wanted = frozenset(types)
        return [r for r in self.resources if r.type in wanted]


def _name(value: Any) -> str:
    return str(value).strip().lower()


def _first_unknown(*values: Any) -> Unknown | None:
    return next((x for x in values if isinstance(x, Unknown)), None)


# --- Kubernetes Services ---------------------------------------------------------------------------


def _tls_port(port: dict[str, Any], annotations: dict[str, Any], tls_ports: set[int]) -> bool:
    number, name = port.get("port"), _name(port.get("name") or "")
    cert = annotations.get(f"{AWS_LB}-ssl-cert")
    if isinstance(cert, str) and cert.strip():
        listed = annotations.get(f"{AWS_LB}-ssl-ports")
        wanted = {p.strip().lower() for p in str(listed or "*").split(",")}
        if "*" in wanted or name in wanted or str(_port(number)) in wanted:
            return True
    if _name(port.get("appProtocol") or "") in TLS_NAMES:
        return True
    if name in TLS_NAMES or name.startswith(tuple(f"{n}-" for n in TLS_NAMES)):
        return True
    return _port(number) in tls_ports


def _port(value: Any) -> int | None:
    try:
        return v.port_number(value)
    except BadValue:
        return None


def _plain_ports(ports: Any, annotations: dict[str, Any], tls_ports: set[int]) -> list[str] | Unknown:
    plain: list[str] = []
    for port in v.items(ports):
        if isinstance(port, Unknown):
            return port
        if not isinstance(port, dict):
            continue
        pending = _first_unknown(port.get("port"), port.get("name"), port.get("appProtocol"))
        if pending is not None:
            return pending
        if not _tls_port(port, annotations, tls_ports):
            name = port.get("name")
            plain.append(f"{_port(port.get('port'))}" + (f" ({name})" if name else ""))
    return plain


def _service(r: Resource, tls_ports: set[int], judge: Judge) -> None:
    spec, annotations = v.dig(r.props, "spec"), v.dig(r.props, "metadata", "annotations")
    pending = _first_unknown(spec, annotations, v.dig(spec, "type"))
    if pending is not None:
        judge.unknown(f"{r.name}: {pending}")
        return
    spec = v.as_dict(spec)
    annotations = v.as_dict(annotations)
    patch = r.type == SERVICE_PATCH
    kind = spec.get("type")
    if kind != "LoadBalancer" and not (patch and kind is None and spec.get("ports") is not None):
        return
    if internal_load_balancer(annotations, spec):
        return
    plain = _plain_ports(spec.get("ports"), annotations, tls_ports)
    if isinstance(plain, Unknown):
        judge.unknown(f"{r.name}: {plain}")
        return
    if not plain:
        return
    if patch:
        judge.unknown(f"{r.name}: this patch leaves port(s) {', '.join(plain)} without TLS on what may be a public "
                      "load balancer; the live service's type and annotations decide, and the policy cannot see them")
        return
    judge.violation(f"Service {r.name} is a public LoadBalancer (no internal annotation) that serves port(s) "
                    f"{', '.join(plain)} without TLS: requests, API keys and completions cross the internet in clear "
                    f"text. {FIX}", r.urn)


# --- Ingress ---------------------------------------------------------------------------------------


def _alb_http_ports(annotations: dict[str, Any], tls: bool) -> list[int] | str:
    listen = annotations.get(f"{ALB}/listen-ports")
    if listen is None:
        certified = tls or bool(annotations.get(f"{ALB}/certificate-arn"))
        return [] if certified else [80]  # the controller listens on HTTPS 443 with a certificate, else HTTP 80
    try:
        entries = json.loads(str(listen))
    except ValueError:
        return f"{ALB}/listen-ports {listen!r} is not JSON"
    return [p for entry in v.items(entries) if isinstance(entry, dict)
            for proto, p in entry.items() if str(proto).upper() == "HTTP"]


def _ingress_problem(r: Resource, stack: Stack) -> str | Unknown | None:
    meta, spec = v.dig(r.props, "metadata"), v.dig(r.props, "spec")
    annotations = v.dig(meta, "annotations")
    pending = _first_unknown(spec, annotations, v.dig(spec, "tls"), v.dig(spec, "ingressClassName"))
    if pending is not None:
        return pending
    spec, annotations = v.as_dict(spec), v.as_dict(annotations)
    pending = _first_unknown(*annotations.values())
    if pending is not None:
        return pending
    tls = bool(v.items(spec.get("tls")))
    controller = _name(spec.get("ingressClassName") or annotations.get("kubernetes.io/ingress.class") or "")
    if not controller and stack.of([GKE_CLUSTER]):
        controller = "gce"  # GKE's default ingress controller
    if controller == "alb":
        if _name(annotations.get(f"{ALB}/scheme") or "internal") != "internet-facing":
            return None  # the controller's default scheme is internal
        ports = _alb_http_ports(annotations, tls)
        if isinstance(ports, str):
            return Unknown(ports)
        if ports and not annotations.get(f"{ALB}/ssl-redirect"):
            return f"the internet-facing ALB listens on HTTP port(s) {ports} without {ALB}/ssl-redirect"
        return None
    if controller == "gce-internal":
        return None
    if controller in ("gce", "gce-multi-cluster"):
        if _name(annotations.get("kubernetes.io/ingress.allow-http") or "true") == "false":
            return None
        frontend = annotations.get("networking.gke.io/v1beta1.FrontendConfig")
        if isinstance(frontend, str) and frontend.strip():
            redirects = _frontend_redirects(frontend.strip(), v.dig(meta, "namespace"), stack)
            if redirects is not False:
                return redirects if isinstance(redirects, Unknown) else None
        return ("GKE serves it on HTTP port 80 (kubernetes.io/ingress.allow-http is not \"false\" and no "
                "FrontendConfig of the stack redirects to HTTPS)")
    if controller in ("azure-application-gateway", "azure/application-gateway"):
        if _name(annotations.get("appgw.ingress.kubernetes.io/use-private-ip") or "") == "true":
            return None
        if tls and _name(annotations.get("appgw.ingress.kubernetes.io/ssl-redirect") or "") == "true":
            return None
        return "the Application Gateway serves it on HTTP (no spec.tls with appgw.ingress.kubernetes.io/ssl-redirect)"
    if not tls:
        return "it has no spec.tls, so its controller serves it on plain HTTP"
    if _name(annotations.get("nginx.ingress.kubernetes.io/ssl-redirect") or "true") == "false":
        return "nginx.ingress.kubernetes.io/ssl-redirect is \"false\", so HTTP is served as well as HTTPS"
    return None


def _frontend_redirects(name: str, namespace: Any, stack: Stack) -> bool | Unknown:
    for config in stack.of([FRONTEND_CONFIG]):
        meta = v.dig(config.props, "metadata")
        if v.dig(meta, "name") == name and v.dig(meta, "namespace") in (namespace, None):
            enabled = v.dig(config.props, "spec", "redirectToHttps", "enabled")
            return enabled if isinstance(enabled, Unknown) else v.truthy(enabled) is True
    return Unknown(f"FrontendConfig {name} (not in the stack)")


def _ingress(r: Resource, stack: Stack, judge: Judge) -> None:
    problem = _ingress_problem(r, stack)
    if problem is None:
        return
    if isinstance(problem, Unknown):
        judge.unknown(f"{r.name}: {problem}")
    elif r.type.endswith("Patch"):
        judge.unknown(f"{r.name}: with what this patch sets, {problem}; the live Ingress's other fields decide")
    else:
        judge.violation(f"Ingress {r.name} is public and {problem}: requests and API keys cross the internet in "
                        f"clear text. {FIX}", r.urn)


# --- Gateway API -----------------------------------------------------------------------------------


def _attached(route: Resource, gateway: Resource, listener: dict[str, Any]) -> bool:
    route_ns = v.dig(route.props, "metadata", "namespace")
    for ref in v.items(v.dig(route.props, "spec", "parentRefs")):
        if not isinstance(ref, dict) or ref.get("name") != v.dig(gateway.props, "metadata", "name"):
            continue
        if ref.get("namespace", route_ns) != v.dig(gateway.props, "metadata", "namespace"):
            continue
        section, port = ref.get("sectionName"), ref.get("port")
        if section is not None and section != listener.get("name"):
            continue
        if port is not None and _port(port) != _port(listener.get("port")):
            continue
        return True
    return False


def _redirects_to_https(route: Resource) -> bool | Unknown:
    rules = v.dig(route.props, "spec", "rules")
    if isinstance(rules, Unknown):
        return rules
    found = v.items(rules)
    for rule in found:
        if isinstance(rule, Unknown):
            return rule
        filters = [f for f in v.items(v.dig(rule, "filters")) if isinstance(f, dict)]
        if not any(_name(f.get("type") or "") == "requestredirect"
                   and _name(v.dig(f, "requestRedirect", "scheme") or "") == "https" for f in filters):
            return False
    return bool(found)


def _gateway(r: Resource, stack: Stack, tls_ports: set[int], judge: Judge) -> None:
    spec = v.dig(r.props, "spec")
    cls = v.dig(spec, "gatewayClassName")
    if isinstance(spec, Unknown) or isinstance(cls, Unknown):
        judge.unknown(f"{r.name}: {_first_unknown(spec, cls)}")
        return
    if any(word in _name(cls or "") for word in INTERNAL_GATEWAY_CLASS_WORDS):
        return
    for i, listener in enumerate(v.items(v.dig(spec, "listeners"))):
        if isinstance(listener, Unknown):
            judge.unknown(f"{r.name} listeners[{i}]: {listener}")
            continue
        if not isinstance(listener, dict):
            continue
        proto = _name(listener.get("protocol") or "")
        where = f"Gateway {r.name} listener {listener.get('name')} (port {_port(listener.get('port'))})"
        if proto in ("https", "tls"):
            continue
        if proto in ("tcp", "udp"):
            if _port(listener.get("port")) not in tls_ports:
                judge.violation(f"{where} passes {proto.upper()} from the internet without TLS. {FIX}", r.urn)
            continue
        routes = [route for route in stack.of(HTTP_ROUTES) if _attached(route, r, listener)]
        verdicts = [_redirects_to_https(route) for route in routes]
        pending = next((x for x in verdicts if isinstance(x, Unknown)), None)
        if routes and all(x is True for x in verdicts):
            continue
        if pending is not None and all(x is not False for x in verdicts):
            judge.unknown(f"{where}: {pending}")
            continue
        judge.violation(f"{where} serves plain HTTP on a public gateway, and the stack's HTTPRoutes on it do not all "
                        "redirect to https (a RequestRedirect filter with scheme https). Add the redirect route, or "
                        "serve only the HTTPS listener.", r.urn)


# --- AWS load balancer listeners -------------------------------------------------------------------


def _redirect_or_fixed(action: Any) -> bool | Unknown:
    if isinstance(action, Unknown):
        return action
    if not isinstance(action, dict):
        return False
    kind = action.get("type")
    if isinstance(kind, Unknown):
        return kind
    if _name(kind or "") == "fixed-response":
        return True
    protocol = v.dig(action, "redirect", "protocol")
    if isinstance(protocol, Unknown):
        return protocol
    return _name(kind or "") == "redirect" and _name(protocol or "") == "https"


def _aws_listener(r: Resource, stack: Stack, tls_ports: set[int], judge: Judge) -> None:
    p = r.props
    lbs = stack.linked(r, "loadBalancerArn", AWS_LOAD_BALANCERS)
    proto, port = p.get("protocol"), p.get("port")
    if isinstance(proto, Unknown) or isinstance(port, Unknown):
        judge.unknown(f"{r.name}: {_first_unknown(proto, port)}")
        return
    network = any(_name(lb.props.get("loadBalancerType") or "") == "network" for lb in lbs)
    proto = _name(proto or ("tcp" if network else "http"))
    if proto in ("https", "tls", "geneve"):
        return
    if proto == "http":
        actions = list(v.items(p.get("defaultActions")))
        for rule in stack.of(AWS_LISTENER_RULES):
            if r.urn in rule.property_dependencies.get("listenerArn", ()) or (
                    not rule.property_dependencies.get("listenerArn") and r.urn in rule.dependencies):
                actions.extend(v.items(rule.props.get("actions")))
        verdicts = [_redirect_or_fixed(a) for a in actions]
        if verdicts and all(x is True for x in verdicts):
            return
        problem = "serves plain HTTP (its actions and listener rules do not only redirect to HTTPS)"
        pending = next((x for x in verdicts if isinstance(x, Unknown)), None)
        if pending is not None and all(x is not False for x in verdicts):
            judge.unknown(f"{r.name}: {pending}")
            return
    elif _port(port) in tls_ports:
        return
    else:
        problem = f"passes {proto.upper()} on port {_port(port)} without TLS"
    if not lbs:
        judge.unknown(f"listener {r.name} {problem}, and its load balancer is not in the stack, so whether it is "
                      "internal is not known")
        return
    internal = [lb.props.get("internal") for lb in lbs]
    pending = _first_unknown(*internal)
    if pending is not None:
        judge.unknown(f"listener {r.name} {problem}, and its load balancer's {pending}")
        return
    if all(flag is not None and v.truthy(flag) is True for flag in internal):
        return
    judge.violation(f"listener {r.name} of internet-facing load balancer {lbs[0].name} {problem}. Use an HTTPS or "
                    "TLS listener with a certificate, and redirect HTTP to HTTPS.", r.urn)


# --- GCP forwarding rules --------------------------------------------------------------------------


def _url_map_redirects(url_map: Resource) -> bool | Unknown:
    redirect = v.dig(url_map.props, "defaultUrlRedirect", "httpsRedirect")
    routes = [url_map.props.get(k) for k in ("pathMatchers", "hostRules", "defaultService", "defaultRouteAction")]
    pending = _first_unknown(redirect, *routes)
    if pending is not None:
        return pending
    return v.truthy(redirect) is True and not any(v.items(x) for x in routes)


def _gcp_forwarding_rule(r: Resource, stack: Stack, tls_ports: set[int], judge: Judge) -> None:
    p = r.props
    scheme = p.get("loadBalancingScheme", "EXTERNAL")
    if isinstance(scheme, Unknown):
        judge.unknown(f"{r.name}: {scheme}")
        return
    if _name(scheme or "") not in ("external", "external_managed"):
        return
    target = p.get("target")
    if isinstance(target, Unknown) and not r.property_dependencies.get("target"):
        judge.unknown(f"{r.name}: {target}")
        return
    proxies = stack.linked(r, "target", GCP_HTTP_PROXIES)
    text = _name(target) if isinstance(target, str) else ""
    if proxies or "targethttpproxies/" in text:
        maps = [m for proxy in proxies for m in stack.linked(proxy, "urlMap", GCP_URL_MAPS)]
        verdicts = [_url_map_redirects(m) for m in maps]
        if maps and all(x is True for x in verdicts):
            return
        pending = next((x for x in verdicts if isinstance(x, Unknown)), None)
        if not maps or (pending is not None and all(x is not False for x in verdicts)):
            judge.unknown(f"forwarding rule {r.name} sends the internet to an HTTP proxy whose URL map "
                          f"{'is not in the stack' if not maps else pending}")
            return
        judge.violation(f"forwarding rule {r.name} sends the internet to HTTP proxy {proxies[0].name}, whose URL map "
                        "does not redirect every request to HTTPS (defaultUrlRedirect.httpsRedirect with no other "
                        "routes). Serve through a target HTTPS proxy, and redirect HTTP to it.", r.urn)
        return
    if target is not None and not isinstance(target, Unknown) and any(
            k in text for k in ("targethttpsproxies/", "targetsslproxies/")):
        return
    if stack.linked(r, "target", {"gcp:compute/targetHttpsProxy:TargetHttpsProxy",
                                  "gcp:compute/regionTargetHttpsProxy:RegionTargetHttpsProxy",
                                  "gcp:compute/targetSSLProxy:TargetSSLProxy"}):
        return
    ports, all_ports = p.get("ports") or p.get("portRange"), p.get("allPorts")
    pending = _first_unknown(ports, all_ports)
    if pending is not None:
        judge.unknown(f"{r.name}: {pending}")
        return
    try:
        ranges = ((1, 65535),) if v.truthy(all_ports) is True or not ports else tuple(
            rng for spec in v.items(ports) for rng in v.port_range(spec))
    except BadValue as e:
        judge.unknown(f"{r.name}: {e}")
        return
    outside = v.outside(ranges, tuple((t, t) for t in tls_ports))
    if outside:
        judge.violation(f"forwarding rule {r.name} passes port(s) {v.show_ports(outside)} from the internet to its "
                        f"backends without TLS. {FIX}", r.urn)


# --- Azure -----------------------------------------------------------------------------------------


def _segment(ref: Any) -> str | Unknown | None:
    """The last segment of a sub-resource reference ({"id": ".../httpListeners/http"} -> "http")."""
    ident = ref.get("id") if isinstance(ref, dict) else ref
    if isinstance(ident, Unknown):
        return ident
    return str(ident).rstrip("/").rsplit("/", 1)[-1].lower() if ident else None


def _app_gateway(r: Resource, judge: Judge) -> None:
    p = r.props
    parts = [p.get(k) for k in ("frontendIPConfigurations", "httpListeners", "requestRoutingRules",
                                "redirectConfigurations")]
    pending = _first_unknown(*parts)
    if pending is not None:
        judge.unknown(f"{r.name}: {pending}")
        return
    frontends, listeners, rules, redirects = ([x for x in v.items(part) if isinstance(x, dict)] for part in parts)
    public = {_name(f.get("name")) for f in frontends if f.get("publicIPAddress")}
    by_name = {_name(item.get("name")): item for item in listeners}
    redirect_by_name = {_name(item.get("name")): item for item in redirects}
    for listener in listeners:
        if _name(listener.get("protocol") or "") != "http":
            continue
        frontend = _segment(listener.get("frontendIPConfiguration"))
        if isinstance(frontend, Unknown):
            judge.unknown(f"{r.name} listener {listener.get('name')}: {frontend}")
            continue
        if frontend not in public:
            continue
        mine = [rule for rule in rules if _segment(rule.get("httpListener")) == _name(listener.get("name"))]
        safe = bool(mine)
        for rule in mine:
            redirect = redirect_by_name.get(str(_segment(rule.get("redirectConfiguration"))))
            target = _segment(redirect.get("targetListener")) if redirect else None
            url = redirect.get("targetUrl") if redirect else None
            to_https = (isinstance(target, str) and _name(by_name.get(target, {}).get("protocol") or "") == "https") \
                or (isinstance(url, str) and url.strip().lower().startswith("https://"))
            safe = safe and to_https
        if not safe:
            judge.violation(f"Application Gateway {r.name} listener {listener.get('name')} serves plain HTTP on a "
                            "public frontend, and its routing rules do not all redirect to an HTTPS listener or "
                            "URL. Add an HTTPS listener and a redirect configuration for HTTP.", r.urn)


def _front_door_route(r: Resource, judge: Judge) -> None:
    protocols, redirect = r.props.get("supportedProtocols"), r.props.get("httpsRedirect")
    pending = _first_unknown(protocols, redirect, *v.items(protocols))
    if pending is not None:
        judge.unknown(f"{r.name}: {pending}")
        return
    accepted = {_name(x) for x in (v.items(protocols) or ["Http", "Https"])}
    if "http" in accepted and _name(redirect or "disabled") != "enabled":
        judge.violation(f"Front Door route {r.name} accepts HTTP (supportedProtocols {sorted(accepted)}) without "
                        "httpsRedirect: Enabled. Enable the redirect, or accept Https only.", r.urn)


def check_public_endpoint_tls(resources: list[Resource], config: dict[str, Any], judge: Judge) -> None:
    stack = Stack(resources)
    tls_ports = {p for spec in config.get("tlsPorts") or [] for lo, hi in v.port_range(spec) for p in range(lo, hi + 1)}
    for r in resources:
        if r.type in (SERVICE, SERVICE_PATCH):
            _service(r, tls_ports, judge)
        elif r.type in INGRESSES:
            _ingress(r, stack, judge)
        elif r.type in GATEWAYS:
            _gateway(r, stack, tls_ports, judge)
        elif r.type in AWS_LISTENERS:
            _aws_listener(r, stack, tls_ports, judge)
        elif r.type in GCP_FORWARDING_RULES:
            _gcp_forwarding_rule(r, stack, tls_ports, judge)
        elif r.type == AZURE_APP_GATEWAY:
            _app_gateway(r, judge)
        elif r.type == AZURE_FRONT_DOOR_ROUTE:
            _front_door_route(r, judge)


# --- the serving server's API key ------------------------------------------------------------------

API_KEY = "servestack_api_key"
API_KEYS_FILE = "servestack_api_keys_file"
# The server's own settings (serving/settings.py): a container that sets them runs the server.
SERVER_ENV = ("model_path", "servestack_")
SERVING_IMAGES = ["servestack-serving"]


def _image_repository(image: str) -> str:
    name = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return name.split(":", 1)[0].lower()


def _runs_server(c: dict[str, Any], images: set[str]) -> bool:
    """Whether a container runs the serving server: its image, or the server's environment; a command that runs
    another module of the image (serving.fetch) is not the server."""
    command = [str(x) for x in v.items(c.get("command")) if isinstance(x, str)]
    if any(x.startswith("serving.") for x in command):
        return False
    image = c.get("image")
    if isinstance(image, str) and _image_repository(image) in images:
        return True
    names = [_name(e.get("name") or "") for e in v.items(c.get("env")) if isinstance(e, dict)]
    return any(n == SERVER_ENV[0] or n.startswith(SERVER_ENV[1]) for n in names)


def _key_problem(env: list[Any], env_from: Any, patch: bool) -> str | Unknown | None:
    """What turns the API key off (or leaks it) in this container's environment, or None.

    Every entry of the name counts: Kubernetes keeps the last of duplicates, and the server reads names
    without regard to case, so any one of them may be the one it sees.
    """
    entries = [e for e in env if isinstance(e, dict) and isinstance(e.get("name"), str)
               and _name(e["name"]) == API_KEY]
    if not entries:
        if patch:
            return None  # the live container keeps its own entry
        if v.items(env_from):
            return Unknown("SERVESTACK_API_KEY is not in env; envFrom may set it")
        return "SERVESTACK_API_KEY is not set, so the server answers without authentication"
    problems: list[str] = []
    for entry in entries:
        value, source = entry.get("value"), entry.get("valueFrom")
        pending = _first_unknown(value, source)
        if pending is not None:
            return pending
        ref = v.dig(source, "secretKeyRef")
        if isinstance(ref, Unknown):
            return ref
        if isinstance(ref, dict):
            optional = ref.get("optional")
            if isinstance(optional, Unknown):
                return optional
            if optional is not None and v.truthy(optional) is True:
                problems.append(f"{entry['name']} comes from secret {ref.get('name')} with optional: true, so the "
                                "pod starts without a key (and serves without authentication) when the key is missing")
        elif source is not None:
            problems.append(f"{entry['name']} comes from {', '.join(source)} instead of a Secret")
        elif value is None or str(value) == "":
            problems.append(f"{entry['name']} is set to an empty value, which turns authentication off")
        else:
            problems.append(f"{entry['name']} is written into the pod spec as plain text")
    return "; ".join(problems) or None


def _keys_file_problem(env: list[Any], container: dict[str, Any], spec: dict[str, Any]) -> str | Unknown | None:
    """What is wrong with the keys file a container names (SERVESTACK_API_KEYS_FILE), or None when it is read
    from a Secret volume that must exist; "" when the container names no keys file."""
    entries = [e for e in env if isinstance(e, dict) and isinstance(e.get("name"), str)
               and _name(e["name"]) == API_KEYS_FILE]
    if not entries:
        return ""
    value = entries[-1].get("value")
    if isinstance(value, Unknown):
        return value
    if not isinstance(value, str) or not value.strip():
        return f"{entries[-1]['name']} is empty, which turns authentication off"
    mounts = [m for m in v.items(container.get("volumeMounts")) if isinstance(m, dict)
              and isinstance(m.get("mountPath"), str) and value.startswith(m["mountPath"].rstrip("/") + "/")]
    if not mounts:
        return f"{entries[-1]['name']} names {value}, which no volume of a Secret provides"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    volume = next((x for x in v.items(spec.get("volumes")) if isinstance(x, dict)
                   and x.get("name") == mount.get("name")), None)
    secret = v.dig(volume, "secret") if volume is not None else None
    if isinstance(secret, Unknown):
        return secret
    if not isinstance(secret, dict):
        return f"{entries[-1]['name']} names {value}, from volume {mount.get('name')}, which is not a Secret"
    if v.truthy(secret.get("optional")) is True:
        return (f"{entries[-1]['name']} names {value}, from secret {secret.get('secretName')} with optional: true, "
                "so the pod starts without keys")
    return None


def check_serving_api_key(resource: Resource, config: dict[str, Any], judge: Judge) -> None:
    path, spec = pod_spec(resource)
    if isinstance(spec, Unknown):
        judge.unknown_value(spec, path)
        return
    if not isinstance(spec, dict):
        return
    images = {_name(x) for x in config.get("servingImages") or []}
    patch = resource.type in PATCHES
    for where, c in containers(path, {"containers": spec.get("containers")}, judge):
        env, env_from = c.get("env"), c.get("envFrom")
        if isinstance(env, Unknown):
            judge.unknown_value(env, f"{where}.env")
            continue
        if not _runs_server(c, images):
            continue
        keys_file = _keys_file_problem(v.items(env), c, spec)
        has_key = any(isinstance(e, dict) and _name(e.get("name") or "") == API_KEY for e in v.items(env))
        # A keys file from a Secret is enough; a single key, where there is one, must come from a Secret too.
        problem = keys_file if keys_file != "" and (keys_file is not None or not has_key) else (
            _key_problem(v.items(env), env_from, patch))
        if isinstance(problem, Unknown):
            judge.unknown_value(problem, f"{where}.env")
        elif problem:
            judge.violation(f"{where} runs the serving server, but {problem}. Mount the API keys file from a Secret "
                            "(SERVESTACK_API_KEYS_FILE, as servestack:serving.apiKeys does), or set "
                            "SERVESTACK_API_KEY from a Secret (valueFrom.secretKeyRef, not optional).")


ENDPOINT_RULES = [
    Rule(
        name="public-endpoint-tls",
        description="A public load balancer, listener, Ingress or Gateway does not serve plain HTTP (a redirect to "
                    "HTTPS is fine) (stack rule).",
        severity=Severity.HIGH,
        enforcement=EnforcementLevel.ADVISORY,  # the prod stacks' policy config makes it mandatory
        remediation="Terminate TLS at the load balancer, Ingress or Gateway and redirect HTTP to HTTPS, or keep the "
                    "endpoint internal.",
        types=ENDPOINT_TYPES,
        check=check_public_endpoint_tls,
        stack=True,
        exemptible=True,
        config={"tlsPorts": {
            "type": "array", "items": {"type": ["integer", "string"]}, "default": [443],
            "description": "Ports a public L4 load balancer passes through to backends that terminate TLS."}},
    ),
    Rule(
        name="serving-api-key-required",
        description="The serving server's containers require API keys: a keys file (SERVESTACK_API_KEYS_FILE) "
                    "mounted from a Secret, or SERVESTACK_API_KEY from a Secret; set, non-empty, not optional.",
        severity=Severity.HIGH,
        enforcement=EnforcementLevel.ADVISORY,  # the prod stacks' policy config makes it mandatory
        remediation="Keep servestack:serving.auth on; it puts the clients' key hashes in a Secret mounted into "
                    "the pod.",
        types=WORKLOADS,
        check=check_serving_api_key,
        config={"servingImages": {
            "type": "array", "items": {"type": "string"}, "default": SERVING_IMAGES,
            "description": "Image repositories (last path segment) that run the serving server."}},
    ),
]
