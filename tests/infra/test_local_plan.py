"""The `local` stack's offline plan: the serving contract as Kubernetes objects, and the CLI around it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.drain import LB_UNHEALTHY_AFTER, MARGIN_SECONDS
from servestack.offline.plan import ROOT, STACKS_DIR, PlanError, plan_in_subprocess
from tests.infra.plans import inputs, one, resources

NS = "servestack"
LABELS = {"app.kubernetes.io/name": "servestack", "app.kubernetes.io/instance": "servestack",
          "app.kubernetes.io/component": "server"}


@pytest.fixture(scope="module")
def plan(stack_plan: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    return stack_plan("local")


@pytest.fixture(scope="module")
def gpu_plan(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The local stack with one GPU per pod, a model from a bucket URI and monitoring on."""
    stacks = tmp_path_factory.mktemp("stacks")
    config = yaml.safe_load((STACKS_DIR / "Pulumi.local.yaml").read_text())
    config["config"]["servestack:gpu"] = {"type": "nvidia-l4", "count": 1, "maxNodes": 2}
    config["config"]["servestack:model"] = {"name": "smollm2", "source": "s3://models-bucket/smollm2",
                                            "revision": "2026-11-01"}
    config["config"]["servestack:serving"].update(maxReplicas=4)
    config["config"]["servestack:monitoring"] = {"enabled": True}
    # A cluster with a load-balancer controller (cloud-provider-kind, MetalLB).
    config["config"]["servestack:local"]["loadBalancer"] = True
    (stacks / "Pulumi.local-gpu.yaml").write_text(yaml.safe_dump(config))
    return plan_in_subprocess("local-gpu", stacks_dir=stacks)


SERVER = "servestack-deployment"


def _pod_spec(plan: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = inputs(plan, "kubernetes:apps/v1:Deployment", SERVER)["spec"]["template"]["spec"]
    return spec


def test_resources_are_the_serving_contract_under_one_component(plan: dict[str, Any]) -> None:
    component = one(plan, "servestack:kubernetes:ServingDeployment")
    assert component["custom"] is False
    kinds = sorted(r["type"] for r in plan["resources"] if r["parent"] == component["urn"])
    # The server and the store of the clients' limits (maxReplicas 2: two servers count together); the
    # command that frees the HPA's name from KEDA (infra/autoscaling.py, keda_released).
    assert kinds == [
        "command:local:Command",
        "kubernetes:apps/v1:Deployment",
        "kubernetes:apps/v1:Deployment",
        "kubernetes:autoscaling/v2:HorizontalPodAutoscaler",
        "kubernetes:core/v1:Namespace",
        "kubernetes:core/v1:Secret",
        "kubernetes:core/v1:Secret",
        "kubernetes:core/v1:Service",
        "kubernetes:core/v1:Service",
        "kubernetes:core/v1:ServiceAccount",
        "kubernetes:networking.k8s.io/v1:NetworkPolicy",
        "kubernetes:networking.k8s.io/v1:NetworkPolicy",
        "kubernetes:policy/v1:PodDisruptionBudget",
        "kubernetes:rbac.authorization.k8s.io/v1:Role",
        "kubernetes:rbac.authorization.k8s.io/v1:Role",
        "random:index/randomPassword:RandomPassword",
        "random:index/randomPassword:RandomPassword",
    ]
    # Every Kubernetes object goes through the stack's provider, pointed at the configured context.
    provider = one(plan, "pulumi:providers:kubernetes")
    assert provider["inputs"]["context"] == "kind-servestack"
    for resource in resources(plan, "kubernetes:apps/v1:Deployment") + resources(plan, "kubernetes:core/v1:Service"):
        assert resource["provider"] == provider["urn"]


def test_namespace_enforces_restricted_pod_security(plan: dict[str, Any]) -> None:
    namespace = inputs(plan, "kubernetes:core/v1:Namespace")
    assert namespace["metadata"]["name"] == NS
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_api_keys_are_random_secrets(plan: dict[str, Any]) -> None:
    password = inputs(plan, "random:index/randomPassword:RandomPassword", "servestack-api-key-dev")
    assert password["length"] == 48.0 and password["special"] is False
    secret = inputs(plan, "kubernetes:core/v1:Secret", "servestack-api-keys")
    assert secret["stringData"] == {"api-keys.json": "[secret]"}  # masked in the plan, a secret in the state
    assert plan["outputs"]["api_keys"] == {"dev": "[secret]"}
    env = {e["name"]: e.get("value") for e in _pod_spec(plan)["containers"][0]["env"]}
    assert env["SERVESTACK_API_KEYS_FILE"] == "/etc/servestack/api-keys/api-keys.json"


def test_deployment_probes_fit_a_model_that_loads_for_minutes(plan: dict[str, Any]) -> None:
    server = _pod_spec(plan)["containers"][0]
    assert server["ports"] == [{"name": "http", "containerPort": 8000.0, "protocol": "TCP"},
                               {"name": "metrics", "containerPort": 9090.0, "protocol": "TCP"}]
    startup, readiness, liveness = server["startupProbe"], server["readinessProbe"], server["livenessProbe"]
    assert startup["httpGet"] == {"path": "/health/ready", "port": "http"}
    assert startup["periodSeconds"] * startup["failureThreshold"] == 900.0  # 15 minutes to load
    assert readiness["httpGet"]["path"] == "/health/ready" and readiness["periodSeconds"] == 5.0
    assert liveness["httpGet"]["path"] == "/health/live"
    assert liveness["periodSeconds"] * liveness["failureThreshold"] == 60.0


def test_shutdown_leaves_time_for_the_drain(plan: dict[str, Any]) -> None:
    pod = _pod_spec(plan)
    server = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in server["env"]}
    pre_stop = server["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = float(env["SERVESTACK_DRAIN_SECONDS"])
    # Without a gateway the load balancer sends new connections until its health checks fail the node.
    assert pre_stop == LB_UNHEALTHY_AFTER["local"] + MARGIN_SECONDS and drain == 30.0
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain
    # Past the drain, uvicorn's graceful shutdown alone may take 5 s (serving/__main__.py), then the engine stops.
    assert pod["terminationGracePeriodSeconds"] - pre_stop - drain > 5.0


def test_containers_are_locked_down(plan: dict[str, Any]) -> None:
    pod = _pod_spec(plan)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    server = pod["containers"][0]
    assert server["securityContext"] == {
        "runAsNonRoot": True, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
    mounts = {m["mountPath"] for m in server["volumeMounts"]}
    assert "/tmp" in mounts  # the only writable place besides the model volume


def test_no_service_link_variables_reach_the_server_settings(plan: dict[str, Any]) -> None:
    # The Service is named servestack: its link variables (SERVESTACK_PORT=tcp://..., SERVESTACK_SERVICE_HOST)
    # would share the server's SERVESTACK_ prefix.
    assert inputs(plan, "kubernetes:core/v1:Service", "servestack-service")["metadata"]["name"] == "servestack"
    assert _pod_spec(plan)["enableServiceLinks"] is False


def test_cpu_stack_asks_for_no_gpu(plan: dict[str, Any]) -> None:
    pod = _pod_spec(plan)
    server = pod["containers"][0]
    assert "nvidia.com/gpu" not in server["resources"]["limits"]
    assert server["resources"]["requests"] == {"cpu": "1", "memory": "2Gi"}
    assert server["resources"]["limits"] == {"memory": "2Gi"}
    assert "nodeSelector" not in pod and "tolerations" not in pod
    # The model is baked into the image: no init container fetches it.
    assert "initContainers" not in pod
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert env["MODEL_PATH"] == "/opt/servestack/model"
    assert "SERVESTACK_REQUIRE_CUDA" not in env


def test_rolling_update_never_drops_below_available_replicas(plan: dict[str, Any]) -> None:
    deployment = one(plan, "kubernetes:apps/v1:Deployment", SERVER)
    spec = deployment["inputs"]["spec"]
    assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0.0, "maxSurge": 1.0}
    assert spec["selector"]["matchLabels"] == LABELS


def test_without_a_load_balancer_controller_the_service_is_reached_by_port_forward(plan: dict[str, Any]) -> None:
    """kind and minikube have no load-balancer controller: a LoadBalancer Service would wait 30 minutes for
    an address that never comes. The `up` ends with a usable endpoint and the command that opens it."""
    spec = inputs(plan, "kubernetes:core/v1:Service", "servestack-service")["spec"]
    assert spec["type"] == "ClusterIP"
    assert "loadBalancerSourceRanges" not in spec and "externalTrafficPolicy" not in spec
    assert spec["ports"] == [{"name": "http", "port": 80.0, "targetPort": "http", "protocol": "TCP"}]
    assert plan["outputs"]["endpoint"] == "http://127.0.0.1:8000"
    assert plan["outputs"]["connect"] == ("kubectl --context kind-servestack -n servestack port-forward "
                                          "service/servestack 8000:80")
    assert plan["outputs"]["gpu_node_usd_per_hour"] == 0.0  # a local cluster is paid for elsewhere


def test_with_a_load_balancer_controller_the_service_is_a_load_balancer_limited_to_the_allowed_cidrs(
        gpu_plan: dict[str, Any]) -> None:
    spec = inputs(gpu_plan, "kubernetes:core/v1:Service", "servestack-service")["spec"]
    assert spec["type"] == "LoadBalancer"
    assert spec["loadBalancerSourceRanges"] == ["127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
    assert spec["externalTrafficPolicy"] == "Local"
    assert gpu_plan["outputs"]["endpoint"].startswith("http://203.0.113.")
    assert "connect" not in gpu_plan["outputs"]


def test_first_rollout_may_take_half_an_hour_for_the_deployment_and_its_service(plan: dict[str, Any]) -> None:
    # Pulumi's Service await also waits for ready endpoints: with its default 10 minutes, a GPU node
    # scaling from zero plus an image pull and a model load would fail `pulumi up` however long the
    # Deployment may take.
    half_hour = {"create": "30m", "update": "30m"}
    assert one(plan, "kubernetes:apps/v1:Deployment", SERVER)["customTimeouts"] == half_hour
    assert one(plan, "kubernetes:core/v1:Service", "servestack-service")["customTimeouts"] == half_hour
    # Kubernetes itself does not declare the rollout failed (ProgressDeadlineExceeded) before then.
    assert inputs(plan, "kubernetes:apps/v1:Deployment", SERVER)["spec"]["progressDeadlineSeconds"] == 1800.0


def test_autoscaler_and_disruption_budget(plan: dict[str, Any]) -> None:
    hpa = inputs(plan, "kubernetes:autoscaling/v2:HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1.0, 2.0)
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "servestack"}
    pdb = inputs(plan, "kubernetes:policy/v1:PodDisruptionBudget")["spec"]
    assert pdb == {"maxUnavailable": 1.0, "selector": {"matchLabels": LABELS}}
    # No scrape annotations: no scraper reads them (monitoring's PodMonitor selects the pods).
    assert "annotations" not in inputs(plan, "kubernetes:apps/v1:Deployment", SERVER)["spec"]["template"]["metadata"]


def test_network_policy_admits_the_clients_to_the_api_and_nobody_to_the_metrics(plan: dict[str, Any]) -> None:
    spec = inputs(plan, "kubernetes:networking.k8s.io/v1:NetworkPolicy", "servestack-network-policy")["spec"]
    assert spec["podSelector"] == {
        "matchLabels": {k: v for k, v in LABELS.items() if k != "app.kubernetes.io/component"},
        "matchExpressions": [{"key": "app.kubernetes.io/component", "operator": "In", "values": ["server", "canary"]}]}
    assert spec["policyTypes"] == ["Ingress"]
    # Monitoring is off on this stack: no scraper, so the metrics port admits nobody.
    (clients,) = spec["ingress"]
    assert clients["ports"] == [{"port": 8000.0, "protocol": "TCP"}]
    assert [p["ipBlock"]["cidr"] for p in clients["from"]] == [
        "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]


def test_an_internal_load_balancer_without_known_clients_fails_the_plan_by_name(tmp_path: Path) -> None:
    """An existing cluster's own network is unknown: without endpointCidrs the policy would admit nobody."""
    config = yaml.safe_load((STACKS_DIR / "Pulumi.local.yaml").read_text())
    config["config"]["servestack:access"] = {"internalLoadBalancer": True}
    (tmp_path / "Pulumi.local.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(PlanError) as error:
        plan_in_subprocess("local", stacks_dir=tmp_path)
    assert ("servestack:access.endpointCidrs: empty, and the internal load balancer's clients are unknown on the "
            "local platform; list them in endpointCidrs") in str(error.value)


def test_gpu_pods_ask_for_gpus_and_tolerate_the_taint(gpu_plan: dict[str, Any]) -> None:
    pod = _pod_spec(gpu_plan)
    server = pod["containers"][0]
    assert server["resources"]["limits"] == {"memory": "2Gi", "nvidia.com/gpu": "1"}
    assert pod["nodeSelector"] == {"servestack.io/pool": "gpu"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present",
                                   "effect": "NoSchedule"}]
    plugin = inputs(gpu_plan, "kubernetes:apps/v1:DaemonSet")
    assert plugin["metadata"]["namespace"] == "kube-system"
    plugin_pod = plugin["spec"]["template"]["spec"]
    assert plugin_pod["tolerations"] == pod["tolerations"]
    assert plugin_pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is False


def test_model_from_a_bucket_is_fetched_by_an_init_container(gpu_plan: dict[str, Any]) -> None:
    pod = _pod_spec(gpu_plan)
    (fetch,) = pod["initContainers"]
    # The revision's own prefix, verified against its manifest.
    assert fetch["command"] == ["python", "-m", "serving.fetch", "s3://models-bucket/smollm2/2026-11-01",
                                "/models/smollm2", "--name", "smollm2", "--revision", "2026-11-01"]
    assert fetch["securityContext"]["readOnlyRootFilesystem"] is True
    assert fetch["image"] == pod["containers"][0]["image"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["MODEL_PATH"] == "/models/smollm2"
    server_mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "model")
    assert server_mount["readOnly"] is True


def test_monitoring_gets_a_pod_monitor_of_the_metrics_port(gpu_plan: dict[str, Any]) -> None:
    monitor = inputs(gpu_plan, "kubernetes:monitoring.coreos.com/v1:PodMonitor", "servestack-pod-monitor")
    assert monitor["spec"]["podMetricsEndpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]
    # With Prometheus, KEDA scales the server on its queue (tests/infra/test_autoscaling.py), not an HPA on CPU.
    assert resources(gpu_plan, "kubernetes:autoscaling/v2:HorizontalPodAutoscaler") == []
    scaled = inputs(gpu_plan, "kubernetes:keda.sh/v1alpha1:ScaledObject")["spec"]
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (1.0, 4.0)


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "servestack.cli", *args], capture_output=True, text=True, cwd=cwd,
                          check=False)


def test_plan_writes_the_plan_json_and_runs_from_any_directory(tmp_path: Path) -> None:
    # The program runs as the Pulumi language host runs it: infra/ as a folder program (runpy), in a
    # fresh process, whatever the caller's working directory.
    target = tmp_path / "plan.json"
    result = _cli("plan", "--stack", "local", "--json", str(target), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "servestack-deployment" in result.stdout
    assert "Kubernetes 1.35 and published CRD schemas: 14 object(s) valid" in result.stdout
    plan = json.loads(target.read_text())
    assert set(plan) == {"project", "stack", "config", "resources", "outputs"}
    assert plan["project"] == "servestack" and plan["stack"] == "local"
    assert plan["config"]["servestack:cloud"] == "local"
    deployment = one(plan, "kubernetes:apps/v1:Deployment", SERVER)
    assert deployment["urn"] == ("urn:pulumi:local::servestack::servestack:kubernetes:ServingDeployment$"
                                 "kubernetes:apps/v1:Deployment::servestack-deployment")
    assert set(deployment) >= {"urn", "type", "name", "parent", "custom", "inputs", "dependencies"}
    namespace_urn = one(plan, "kubernetes:core/v1:Namespace", "servestack-namespace")["urn"]
    assert namespace_urn in deployment["dependencies"]


def test_unknown_stack_exits_2_with_a_clear_message() -> None:
    result = _cli("plan", "--stack", "nope")
    assert result.returncode == 2
    assert "unknown stack 'nope': there is no stacks/Pulumi.nope.yaml; known stacks:" in result.stderr


def test_config_error_exits_2_before_any_resource(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.broken.yaml").write_text(yaml.safe_dump({"config": {
        "servestack:cloud": "local", "servestack:gpu": {"minNodes": 3, "maxNodes": 1}}}))
    result = _cli("plan", "--stack", "broken", "--stacks-dir", str(tmp_path), "--json", str(tmp_path / "p.json"))
    assert result.returncode == 2
    assert "servestack:gpu.minNodes: 3 is greater than servestack:gpu.maxNodes (1)" in result.stderr
    assert "servestack:local.kubeContext: missing" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "p.json").exists()
