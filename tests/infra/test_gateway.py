"""The gateway in front of the servers, TLS, API keys with their limits, model revisions and canaries, as the
offline plan of a `local` stack declares them (the clouds' own pieces: tests/infra/clouds)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from infra import drain
from infra.gateway import ENVOY_GATEWAY_NAMESPACE, ENVOY_GATEWAY_VERSION, REQUEST_TIMEOUT_SECONDS
from servestack.offline.plan import plan_in_subprocess
from tests.infra.plans import inputs, one, plan_unmasked, resources, stack_variant

HOSTNAME = "llm.example.test"
CERTIFICATE = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n"
PRIVATE_KEY = "-----BEGIN PRIVATE KEY-----\nMIIEtest\n-----END PRIVATE KEY-----\n"
KEYS = [{"client": "web", "requestsPerMinute": 600, "tokensPerMinute": 2000000},
        {"client": "batch", "requestsPerMinute": 60, "tokensPerMinute": 100000, "rotation": 3}]
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
ROUTE = "kubernetes:gateway.networking.k8s.io/v1:HTTPRoute"


def _variant(tmp: Path, name: str, canary: dict[str, Any] | None = None, tls: str = "secret") -> Path:
    serving = {"image": "servestack-serving:0.1.0", "minReplicas": 1, "maxReplicas": 4, "cpu": "1",
               "memory": "2Gi", "apiKeys": KEYS}
    if canary is not None:
        serving["canary"] = canary
    gateway: dict[str, Any] = {"enabled": True, "tls": tls}
    if tls != "none":
        gateway["hostname"] = HOSTNAME
    return stack_variant(
        tmp, "local", name,
        **{"servestack:gateway": gateway,
           "servestack:tlsCertificate": CERTIFICATE if tls == "secret" else None,
           "servestack:tlsPrivateKey": PRIVATE_KEY if tls == "secret" else None,
           "servestack:model": {"name": "tiny", "source": "s3://models/tiny", "revision": "r1"},
           "servestack:serving": serving})


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("stacks")
    _variant(tmp, "local-canary-10", {"revision": "r2", "weight": 10})
    _variant(tmp, "local-canary-0", {"revision": "r2", "weight": 0})
    _variant(tmp, "local-canary-100", {"revision": "r2", "weight": 100}, tls="none")
    return tmp


@pytest.fixture(scope="module")
def plan(stacks: Path) -> dict[str, Any]:
    """Secrets shown: the TLS secret and the API keys' file are read below."""
    return plan_unmasked("local-canary-10", stacks)


@pytest.fixture(scope="module")
def plan_weight_0(stacks: Path) -> dict[str, Any]:
    return plan_in_subprocess("local-canary-0", stacks_dir=stacks)


@pytest.fixture(scope="module")
def plan_weight_100(stacks: Path) -> dict[str, Any]:
    return plan_in_subprocess("local-canary-100", stacks_dir=stacks)


def _by_name(plan: dict[str, Any], type_token: str) -> dict[str, dict[str, Any]]:
    return {r["inputs"]["metadata"]["name"]: r for r in resources(plan, type_token)}


def _depends_on(plan: dict[str, Any], resource: dict[str, Any]) -> set[str]:
    names = {r["urn"]: r["name"] for r in plan["resources"]}
    return {names[urn] for urn in resource["dependencies"] if urn in names}


# --- the gateway and TLS ------------------------------------------------------------------------------


def test_envoy_gateway_is_installed_from_pinned_charts_crds_first(plan: dict[str, Any]) -> None:
    releases = {r["name"]: r for r in resources(plan, "kubernetes:helm.sh/v3:Release")}
    crds, controller = releases["servestack-gateway-crds"], releases["servestack-envoy-gateway"]
    assert crds["inputs"]["chart"] == "oci://docker.io/envoyproxy/gateway-crds-helm"
    assert controller["inputs"]["chart"] == "oci://docker.io/envoyproxy/gateway-helm"
    assert crds["inputs"]["version"] == controller["inputs"]["version"] == ENVOY_GATEWAY_VERSION
    # The CRDs chart keeps them as templates, so that a second `up` with a new version upgrades them.
    assert crds["inputs"]["values"]["crds"] == {"gatewayAPI": {"enabled": True, "channel": "standard"},
                                                "envoyGateway": {"enabled": True}}
    assert controller["inputs"]["values"]["crds"] == {"enabled": False}
    assert "servestack-gateway-crds" in _depends_on(plan, controller)
    # No ACME here (tls: secret): no cert-manager.
    assert "cert-manager" not in releases


def test_https_listener_for_the_hostname_and_http_only_redirects(plan: dict[str, Any]) -> None:
    gateway = inputs(plan, "kubernetes:gateway.networking.k8s.io/v1:Gateway")
    listeners = {listener["name"]: listener for listener in gateway["spec"]["listeners"]}
    assert listeners["https"] == {
        "name": "https", "port": 443, "protocol": "HTTPS", "hostname": HOSTNAME,
        "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": "servestack-tls"}]},
        "allowedRoutes": {"namespaces": {"from": "Same"}}}
    assert listeners["http"]["port"] == 80 and listeners["http"]["hostname"] == HOSTNAME
    # Envoy Gateway reports Programmed once its load balancer has an address: `up` waits for it.
    assert gateway["metadata"]["annotations"]["pulumi.com/waitFor"] == "condition=Programmed"
    routes = _by_name(plan, ROUTE)
    redirect = routes["servestack-https-redirect"]["inputs"]["spec"]
    assert redirect["parentRefs"][0]["sectionName"] == "http"
    assert redirect["rules"] == [{"filters": [{"type": "RequestRedirect",
                                               "requestRedirect": {"scheme": "https", "statusCode": 301}}]}]
    api = routes["servestack"]["inputs"]["spec"]
    assert api["parentRefs"][0]["sectionName"] == "https"


def test_the_certificate_from_the_stack_config_is_a_secret(plan: dict[str, Any]) -> None:
    tls = _by_name(plan, "kubernetes:core/v1:Secret")["servestack-tls"]["inputs"]
    assert tls["type"] == "kubernetes.io/tls"
    assert tls["stringData"] == {"tls.crt": CERTIFICATE, "tls.key": PRIVATE_KEY}


def test_secrets_are_masked_in_the_plan(plan_weight_0: dict[str, Any]) -> None:
    secrets = _by_name(plan_weight_0, "kubernetes:core/v1:Secret")
    assert secrets["servestack-tls"]["inputs"]["stringData"] == {"tls.crt": "[secret]", "tls.key": "[secret]"}
    assert secrets["servestack-api-keys"]["inputs"]["stringData"] == {"api-keys.json": "[secret]"}
    assert plan_weight_0["outputs"]["api_keys"] == {"batch": "[secret]", "web": "[secret]"}


def test_only_the_openai_api_is_routed_with_a_timeout_longer_than_the_servers(plan: dict[str, Any]) -> None:
    rule, = _by_name(plan, ROUTE)["servestack"]["inputs"]["spec"]["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/v1"}}]
    # Envoy's default route timeout (15 s) would cut long answers; the server's own is 300 s.
    assert rule["timeouts"] == {"request": f"{REQUEST_TIMEOUT_SECONDS}s"} and REQUEST_TIMEOUT_SECONDS > 300


def test_requests_are_balanced_per_request_to_the_least_loaded_pod(plan: dict[str, Any]) -> None:
    policy = inputs(plan, "kubernetes:gateway.envoyproxy.io/v1alpha1:BackendTrafficPolicy")["spec"]
    assert policy["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute",
                                     "name": "servestack"}]
    assert policy["loadBalancer"] == {"type": "LeastRequest"}
    # Only what no pod has started on is retried.
    assert policy["retry"]["retryOn"]["httpStatusCodes"] == [503]
    assert "5xx" not in policy["retry"]["retryOn"]["triggers"]


def test_envoy_runs_on_the_system_nodes_and_drains_as_the_load_balancer_needs(plan: dict[str, Any]) -> None:
    spec = inputs(plan, "kubernetes:gateway.envoyproxy.io/v1alpha1:EnvoyProxy")["spec"]
    kubernetes = spec["provider"]["kubernetes"]
    assert kubernetes["envoyDeployment"]["replicas"] == 2
    assert kubernetes["envoyPDB"] == {"maxUnavailable": 1}
    # The local cluster has no load balancer controller: the Envoy Service is reached by port-forward.
    assert kubernetes["envoyService"] == {"name": "servestack-gateway", "type": "ClusterIP"}
    assert spec["shutdown"] == {"minDrainDuration": f"{drain.envoy_min_drain_seconds('local')}s",
                                "drainTimeout": f"{REQUEST_TIMEOUT_SECONDS}s"}
    assert plan["outputs"]["connect"] == (
        f"kubectl --context kind-servestack -n {ENVOY_GATEWAY_NAMESPACE} port-forward service/servestack-gateway "
        "8443:443")
    assert plan["outputs"]["endpoint"] == "https://127.0.0.1:8443"


def test_destroy_waits_for_the_gateway_load_balancer_before_the_controller_goes(plan: dict[str, Any]) -> None:
    wait = one(plan, "command:local:Command", "servestack-load-balancer-gone")
    assert wait["inputs"]["create"] == "true"
    assert f"-n {ENVOY_GATEWAY_NAMESPACE} get service servestack-gateway" in wait["inputs"]["delete"]
    assert "servestack-envoy-gateway" in _depends_on(plan, wait)
    gateway = one(plan, "kubernetes:gateway.networking.k8s.io/v1:Gateway")
    # Destroy deletes dependents first: the Gateway, then the wait, then the controller.
    assert "servestack-load-balancer-gone" in _depends_on(plan, gateway)


def test_serving_services_are_internal_and_only_envoy_reaches_the_api(plan: dict[str, Any]) -> None:
    services = _by_name(plan, "kubernetes:core/v1:Service")
    assert services["servestack"]["inputs"]["spec"]["type"] == "ClusterIP"
    assert services["servestack-canary"]["inputs"]["spec"]["type"] == "ClusterIP"
    policy = _by_name(plan, "kubernetes:networking.k8s.io/v1:NetworkPolicy")["servestack"]["inputs"]["spec"]
    (api,) = policy["ingress"]  # monitoring off: the metrics port admits nobody
    assert api["ports"] == [{"port": 8000, "protocol": "TCP"}]
    assert api["from"] == [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ENVOY_GATEWAY_NAMESPACE}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/component": "proxy",
                                        "gateway.envoyproxy.io/owning-gateway-name": "servestack"}}}]
    # Both tracks, and nothing else in the namespace.
    assert policy["podSelector"]["matchExpressions"] == [
        {"key": "app.kubernetes.io/component", "operator": "In", "values": ["server", "canary"]}]


def test_metrics_are_on_their_own_port_which_no_service_exposes(plan: dict[str, Any]) -> None:
    for deployment in ("servestack", "servestack-canary"):
        pod = _by_name(plan, DEPLOYMENT)[deployment]["inputs"]["spec"]["template"]
        server = pod["spec"]["containers"][0]
        assert {p["name"]: p["containerPort"] for p in server["ports"]} == {"http": 8000, "metrics": 9090}
        assert {"name": "SERVESTACK_METRICS_PORT", "value": "9090"} in server["env"]
    for service in resources(plan, "kubernetes:core/v1:Service"):
        assert all(p["port"] != 9090 for p in service["inputs"]["spec"]["ports"])


def test_behind_the_gateway_the_pause_before_the_drain_is_short(plan: dict[str, Any]) -> None:
    pod = _by_name(plan, DEPLOYMENT)["servestack"]["inputs"]["spec"]["template"]["spec"]
    server = pod["containers"][0]
    assert server["lifecycle"]["preStop"] == {"sleep": {"seconds": drain.GATEWAY_PRE_STOP_SECONDS}}
    assert pod["terminationGracePeriodSeconds"] == drain.GATEWAY_PRE_STOP_SECONDS + 30 + drain.SHUTDOWN_SECONDS


# --- API keys and their limits -------------------------------------------------------------------------


def test_each_client_has_its_own_key_and_the_pods_hold_only_its_hash(plan: dict[str, Any]) -> None:
    keys = plan["outputs"]["api_keys"]
    assert sorted(keys) == ["batch", "web"] and keys["web"] != keys["batch"]
    assert all(len(k) == 48 for k in keys.values())
    document = json.loads(_by_name(plan, "kubernetes:core/v1:Secret")["servestack-api-keys"]["inputs"]
                          ["stringData"]["api-keys.json"])
    assert document == {"clients": [
        {"client": "web", "sha256": hashlib.sha256(keys["web"].encode()).hexdigest(),
         "requestsPerMinute": 600, "tokensPerMinute": 2000000},
        {"client": "batch", "sha256": hashlib.sha256(keys["batch"].encode()).hexdigest(),
         "requestsPerMinute": 60, "tokensPerMinute": 100000}]}
    assert keys["web"] not in json.dumps(document)


def test_a_rotation_number_is_a_keeper_of_the_clients_key(plan: dict[str, Any]) -> None:
    passwords = {r["name"]: r["inputs"] for r in resources(plan, "random:index/randomPassword:RandomPassword")}
    assert passwords["servestack-api-key-web"]["keepers"] == {"rotation": "1"}
    assert passwords["servestack-api-key-batch"]["keepers"] == {"rotation": "3"}


def test_the_keys_file_is_mounted_so_that_a_rotation_reaches_running_servers(plan: dict[str, Any]) -> None:
    pod = _by_name(plan, DEPLOYMENT)["servestack"]["inputs"]["spec"]["template"]["spec"]
    server = pod["containers"][0]
    assert {"name": "SERVESTACK_API_KEYS_FILE", "value": "/etc/servestack/api-keys/api-keys.json"} in server["env"]
    mount = next(m for m in server["volumeMounts"] if m["name"] == "api-keys")
    # A subPath mount would never see the kubelet's update.
    assert mount == {"name": "api-keys", "mountPath": "/etc/servestack/api-keys", "readOnly": True}
    volume = next(v for v in pod["volumes"] if v["name"] == "api-keys")
    assert volume["secret"]["secretName"] == "servestack-api-keys"
    # No key in the environment.
    assert all(e["name"] != "SERVESTACK_API_KEY" for e in server["env"])


def test_limits_hold_across_replicas_through_a_private_store(plan: dict[str, Any]) -> None:
    store = _by_name(plan, DEPLOYMENT)["servestack-limits"]["inputs"]["spec"]["template"]["spec"]
    valkey = store["containers"][0]
    assert valkey["image"].startswith("docker.io/valkey/valkey:9.")
    assert valkey["args"][:5] == ["valkey-server", "--save", "", "--appendonly", "no"]
    assert "--requirepass" in valkey["args"]
    assert store["securityContext"]["runAsNonRoot"] is True
    assert valkey["securityContext"]["readOnlyRootFilesystem"] is True
    server = _by_name(plan, DEPLOYMENT)["servestack"]["inputs"]["spec"]["template"]["spec"]["containers"][0]
    url = next(e for e in server["env"] if e["name"] == "SERVESTACK_LIMITS_STORE_URL")
    assert url["valueFrom"]["secretKeyRef"] == {"name": "servestack-limits", "key": "url"}
    policy = _by_name(plan, "kubernetes:networking.k8s.io/v1:NetworkPolicy")["servestack-limits"]["inputs"]["spec"]
    assert policy["ingress"][0]["ports"] == [{"port": 6379, "protocol": "TCP"}]
    assert policy["ingress"][0]["from"][0]["podSelector"]["matchExpressions"][0]["values"] == ["server", "canary"]


def test_a_single_replica_counts_its_limits_itself(tmp_path: Path) -> None:
    stacks = _variant(tmp_path, "local-single", tls="none")
    document_path = stacks / "Pulumi.local-single.yaml"
    document_path.write_text(document_path.read_text().replace("maxReplicas: 4", "maxReplicas: 1"))
    plan = plan_in_subprocess("local-single", stacks_dir=stacks)
    assert "servestack-limits" not in _by_name(plan, DEPLOYMENT)
    server = _by_name(plan, DEPLOYMENT)["servestack"]["inputs"]["spec"]["template"]["spec"]["containers"][0]
    assert all(e["name"] != "SERVESTACK_LIMITS_STORE_URL" for e in server["env"])


# --- revisions and canaries ----------------------------------------------------------------------------


def _revision(deployment: dict[str, Any]) -> tuple[str, str, list[str]]:
    template = deployment["inputs"]["spec"]["template"]
    env = {e["name"]: e.get("value") for e in template["spec"]["containers"][0]["env"]}
    fetch = template["spec"]["initContainers"][0]["command"]
    return template["metadata"]["labels"]["servestack.io/model-revision"], env["SERVESTACK_MODEL_REVISION"], fetch


def test_weight_10_runs_a_canary_beside_the_stable_revision(plan: dict[str, Any]) -> None:
    deployments = _by_name(plan, DEPLOYMENT)
    stable, canary = deployments["servestack"], deployments["servestack-canary"]
    assert _revision(stable) == ("r1", "r1", ["python", "-m", "serving.fetch", "s3://models/tiny/r1", "/models/tiny",
                                              "--name", "tiny", "--revision", "r1"])
    assert _revision(canary)[:2] == ("r2", "r2") and _revision(canary)[2][3] == "s3://models/tiny/r2"
    # The stable selector never matches a canary pod.
    assert stable["inputs"]["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "server"
    assert canary["inputs"]["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "canary"
    rule, = _by_name(plan, ROUTE)["servestack"]["inputs"]["spec"]["rules"]
    assert [(b["name"], b["weight"]) for b in rule["backendRefs"]] == [("servestack", 90), ("servestack-canary", 10)]
    # The canary's share of the replicas: 10 % of 4, at least one.
    autoscalers = _by_name(plan, "kubernetes:autoscaling/v2:HorizontalPodAutoscaler")
    assert (autoscalers["servestack-canary"]["inputs"]["spec"]["minReplicas"],
            autoscalers["servestack-canary"]["inputs"]["spec"]["maxReplicas"]) == (1, 1)
    assert autoscalers["servestack"]["inputs"]["spec"]["maxReplicas"] == 4
    assert set(_by_name(plan, "kubernetes:policy/v1:PodDisruptionBudget")) == {"servestack", "servestack-canary"}
    # The route moves only once both Deployments have rolled out.
    route = _by_name(plan, ROUTE)["servestack"]
    assert {"servestack-deployment", "servestack-deployment-canary"} <= _depends_on(plan, route)
    assert plan["outputs"]["canary"] == {"revision": "r2", "weight": 10}


def test_weight_0_deploys_no_canary(plan_weight_0: dict[str, Any]) -> None:
    assert set(_by_name(plan_weight_0, DEPLOYMENT)) == {"servestack", "servestack-limits"}
    assert set(_by_name(plan_weight_0, "kubernetes:core/v1:Service")) == {"servestack", "servestack-limits"}
    rule, = _by_name(plan_weight_0, ROUTE)["servestack"]["inputs"]["spec"]["rules"]
    assert [(b["name"], b["weight"]) for b in rule["backendRefs"]] == [("servestack", 100)]
    assert _revision(_by_name(plan_weight_0, DEPLOYMENT)["servestack"])[:2] == ("r1", "r1")
    assert "canary" not in plan_weight_0["outputs"]


def test_weight_100_promotes_the_canary_into_the_stable_deployment(plan_weight_100: dict[str, Any]) -> None:
    deployments = _by_name(plan_weight_100, DEPLOYMENT)
    assert set(deployments) == {"servestack", "servestack-limits"}
    assert _revision(deployments["servestack"])[:2] == ("r2", "r2")
    assert plan_weight_100["outputs"]["model_revision"] == "r2"
    rule, = _by_name(plan_weight_100, ROUTE)["servestack"]["inputs"]["spec"]["rules"]
    assert [(b["name"], b["weight"]) for b in rule["backendRefs"]] == [("servestack", 100)]


def test_plain_http_serves_the_api_on_the_http_listener(plan_weight_100: dict[str, Any]) -> None:
    gateway = inputs(plan_weight_100, "kubernetes:gateway.networking.k8s.io/v1:Gateway")
    assert [listener["name"] for listener in gateway["spec"]["listeners"]] == ["http"]
    assert set(_by_name(plan_weight_100, ROUTE)) == {"servestack"}
    assert _by_name(plan_weight_100, ROUTE)["servestack"]["inputs"]["spec"]["parentRefs"][0]["sectionName"] == "http"
    assert plan_weight_100["outputs"]["endpoint"] == "http://127.0.0.1:8080"
