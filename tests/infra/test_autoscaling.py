"""Scaling on the queue: the PromQL KEDA asks, the ScaledObject of each track (stable, canary) in a plan with the
monitoring stack, KEDA's pinned chart, the CPU-only HPA without it, and turning monitoring on and off on a live
stack (the command that lets KEDA's HPA go, run against a stand-in kubectl)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import start_http_server

from infra.autoscaling import (
    KEDA_REPOSITORY,
    KEDA_VERSION,
    release_script,
    scaled_object_spec,
    scaling_queries,
)
from infra.monitoring import PROMETHEUS, PROMETHEUS_PORT
from servestack.check import check_plan
from servestack.offline.plan import plan_in_subprocess
from servestack.offline.schemas import validate_custom_resources, validate_plan
from serving.metrics import Metrics
from tests.infra.plans import inputs, one, resources, stack_variant
from tests.serving.conftest import free_port

# The stack's Prometheus (kube-prometheus-stack in the monitoring namespace), which KEDA asks.
PROMETHEUS_URL = f"http://{PROMETHEUS}.monitoring.svc:{PROMETHEUS_PORT}"
SCALED_OBJECT = "kubernetes:keda.sh/v1alpha1:ScaledObject"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
HELM = "kubernetes:helm.sh/v3:Release"
COMMAND = "command:local:Command"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
STABLE_PODS = 'namespace="servestack",pod=~"servestack-[a-z0-9]+-[a-z0-9]+"'
CANARY_PODS = 'namespace="servestack",pod=~"servestack-canary-[a-z0-9]+-[a-z0-9]+"'


def _stacks(tmp: Path) -> Path:
    serving = {"image": "servestack-serving:0.1.0", "minReplicas": 2, "maxReplicas": 6, "cpu": "1",
               "memory": "2Gi", "maxBatchSize": 8,
               "apiKeys": [{"client": "web", "requestsPerMinute": 600, "tokensPerMinute": 2000000}]}
    model = {"name": "tiny", "source": "s3://models/tiny", "revision": "r1"}
    monitoring = {"enabled": True}
    stack_variant(tmp, "local", "local-queue", **{"servestack:serving": serving, "servestack:model": model,
                                                  "servestack:monitoring": monitoring})
    stack_variant(tmp, "local", "local-queue-canary", **{
        "servestack:serving": {**serving, "canary": {"revision": "r2", "weight": 10}},
        "servestack:monitoring": monitoring,
        "servestack:model": model,
        "servestack:gateway": {"enabled": True, "tls": "secret", "hostname": "llm.example.test"},
        "servestack:tlsCertificate": "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n",
        "servestack:tlsPrivateKey": "-----BEGIN PRIVATE KEY-----\nMIIEtest\n-----END PRIVATE KEY-----\n"})
    stack_variant(tmp, "local", "local-cpu-canary", **{
        "servestack:serving": {**serving, "canary": {"revision": "r2", "weight": 10}},
        "servestack:model": model,
        "servestack:gateway": {"enabled": True, "tls": "secret", "hostname": "llm.example.test"},
        "servestack:tlsCertificate": "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n",
        "servestack:tlsPrivateKey": "-----BEGIN PRIVATE KEY-----\nMIIEtest\n-----END PRIVATE KEY-----\n"})
    return tmp


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _stacks(tmp_path_factory.mktemp("stacks"))


@pytest.fixture(scope="module")
def plan(stacks: Path) -> dict[str, Any]:
    return plan_in_subprocess("local-queue", stacks_dir=stacks)


@pytest.fixture(scope="module")
def canary_plan(stacks: Path) -> dict[str, Any]:
    return plan_in_subprocess("local-queue-canary", stacks_dir=stacks)


@pytest.fixture(scope="module")
def cpu_canary_plan(stacks: Path) -> dict[str, Any]:
    return plan_in_subprocess("local-cpu-canary", stacks_dir=stacks)


# --- the queries -------------------------------------------------------------------------------------


def test_queries_sum_the_tracks_queue_and_batch_fill() -> None:
    assert scaling_queries("servestack", "servestack", 16) == {
        "waiting": f"sum(servestack_num_requests_waiting{{{STABLE_PODS}}})",
        "batch-fill": f"sum(servestack_num_requests_running{{{STABLE_PODS}}}) / 16",
    }


def test_the_pod_selector_tells_the_tracks_apart() -> None:
    """Prometheus anchors `=~`: the stable selector takes exactly `<deployment>-<hash>-<suffix>`."""
    def selector(deployment: str) -> re.Pattern[str]:
        query = scaling_queries("servestack", deployment, 16)["waiting"]
        found = re.search(r'pod=~"([^"]+)"', query)
        assert found is not None
        return re.compile(found.group(1))

    stable, canary = selector("servestack"), selector("servestack-canary")
    assert stable.fullmatch("servestack-7d9f8b6c5d-x2x4q")
    assert not stable.fullmatch("servestack-canary-5f6d7c8b9-abcde")
    assert not stable.fullmatch("servestack-limits-store-66b8d-k2j3h-extra")
    assert canary.fullmatch("servestack-canary-5f6d7c8b9-abcde")
    assert not canary.fullmatch("servestack-7d9f8b6c5d-x2x4q")


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="needs Debian's prometheus (apt-get install prometheus)")
def test_a_real_prometheus_answers_each_track_with_its_own_pods(tmp_path: Path) -> None:
    """Three pods' real metrics, labelled as the Prometheus Operator labels them, scraped by a real Prometheus:
    each track's queries add up its own pods only."""
    pods = {"servestack-7d9f8b6c5d-x2x4q": (6, 5), "servestack-7d9f8b6c5d-b7k9m": (10, 7),
            "servestack-canary-5f6d7c8b9-abcde": (2, 1)}  # pod -> (running, waiting)
    targets, servers = [], []
    for pod, (running, waiting) in pods.items():
        metrics = Metrics("tiny", "r1", running=lambda r=running: float(r), waiting=lambda w=waiting: float(w),
                          load_seconds=lambda: 1.0, kv_cache_usage=lambda: 0.0)
        port = free_port()
        servers.append(start_http_server(port, addr="127.0.0.1", registry=metrics.registry)[0])
        targets.append({"targets": [f"127.0.0.1:{port}"], "labels": {"namespace": "servestack", "pod": pod}})
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({"global": {"scrape_interval": "1s"},
                                  "scrape_configs": [{"job_name": "servestack", "static_configs": targets}]}))
    web = free_port()
    prometheus = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{web}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ask(query: str) -> list[str]:
        url = f"http://127.0.0.1:{web}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        with urllib.request.urlopen(url, timeout=5) as answer:
            return [r["value"][1] for r in json.load(answer)["data"]["result"]]

    try:
        expected = {("servestack", "waiting"): ["12"], ("servestack", "batch-fill"): ["1"],
                    ("servestack-canary", "waiting"): ["1"], ("servestack-canary", "batch-fill"): ["0.125"]}
        found: dict[tuple[str, str], list[str]] = {}
        for _ in range(120):  # until all three pods are scraped (at most a minute)
            with contextlib.suppress(OSError):  # Prometheus still starting
                found = {(deployment, name): ask(query) for deployment in ("servestack", "servestack-canary")
                         for name, query in scaling_queries("servestack", deployment, 16).items()}
            if found == expected:
                break
            time.sleep(0.5)
        assert found == expected
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=30)
        for server in servers:
            server.shutdown()


def test_the_queries_name_metrics_the_server_exports() -> None:
    metrics = Metrics("tiny", "r1", running=lambda: 3.0, waiting=lambda: 5.0, load_seconds=lambda: 1.0,
                      kv_cache_usage=lambda: 0.0)
    exported = {family.name for family in metrics.registry.collect()}
    for query in scaling_queries("servestack", "servestack", 16).values():
        (name,) = re.findall(r"(servestack_\w+)\{", query)
        assert name in exported, (name, sorted(exported))


@pytest.mark.parametrize(("namespace", "deployment", "batch", "message"), [
    ("Servestack", "servestack", 16, "namespace 'Servestack'"),
    ("servestack", "servestack.*", 16, "deployment 'servestack.*'"),
    ("servestack", "servestack", 0, "max_batch_size 0"),
])
def test_bad_query_inputs_are_refused(namespace: str, deployment: str, batch: int, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        scaling_queries(namespace, deployment, batch)


def test_a_track_never_scales_to_zero() -> None:
    with pytest.raises(ValueError, match=r"min \(0\)"):
        scaled_object_spec("servestack", "servestack", 0, 3, 16, PROMETHEUS_URL)


# --- the plan with the monitoring stack --------------------------------------------------------------


def test_keda_is_pinned_and_runs_on_the_system_nodes(plan: dict[str, Any]) -> None:
    release = inputs(plan, HELM, "servestack-keda")
    assert (release["chart"], release["version"], release["repositoryOpts"]) == (
        "keda", KEDA_VERSION, {"repo": KEDA_REPOSITORY})
    assert (release["name"], release["namespace"], release["createNamespace"]) == ("keda", "keda", True)
    assert release["values"] == {"crds": {"install": True}, "nodeSelector": {}, "tolerations": []}
    # The ScaledObject needs KEDA's CRD and webhook first.
    keda = one(plan, HELM, "servestack-keda")
    assert keda["urn"] in one(plan, SCALED_OBJECT)["dependencies"]


def test_the_stable_track_scales_on_its_queue(plan: dict[str, Any]) -> None:
    assert resources(plan, HPA) == []
    scaled = inputs(plan, SCALED_OBJECT)
    assert scaled["metadata"]["name"] == "servestack"
    assert scaled["metadata"]["annotations"] == {"scaledobject.keda.sh/transfer-hpa-ownership": "true"}
    assert scaled["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "servestack"},
        "pollingInterval": 15.0,
        "minReplicaCount": 2.0,
        "maxReplicaCount": 6.0,
        "fallback": {"failureThreshold": 3.0, "replicas": 2.0, "behavior": "currentReplicasIfHigher"},
        "advanced": {"horizontalPodAutoscalerConfig": {"name": "servestack", "behavior": {
            "scaleUp": {"stabilizationWindowSeconds": 0.0, "selectPolicy": "Max",
                        "policies": [{"type": "Pods", "value": 2.0, "periodSeconds": 60.0}]},
            "scaleDown": {"stabilizationWindowSeconds": 600.0,
                          "policies": [{"type": "Pods", "value": 1.0, "periodSeconds": 120.0}]},
        }}},
        "triggers": [
            {"type": "prometheus", "name": "waiting", "metricType": "AverageValue", "metadata": {
                "serverAddress": PROMETHEUS_URL, "threshold": "4", "ignoreNullValues": "false",
                "query": f"sum(servestack_num_requests_waiting{{{STABLE_PODS}}})"}},
            {"type": "prometheus", "name": "batch-fill", "metricType": "AverageValue", "metadata": {
                "serverAddress": PROMETHEUS_URL, "threshold": "0.8", "ignoreNullValues": "false",
                "query": f"sum(servestack_num_requests_running{{{STABLE_PODS}}}) / 8"}},
        ],
    }


def test_the_canary_scales_on_its_own_queue(canary_plan: dict[str, Any]) -> None:
    assert resources(canary_plan, HPA) == []
    scaled = {r["inputs"]["metadata"]["name"]: r["inputs"]["spec"] for r in resources(canary_plan, SCALED_OBJECT)}
    assert set(scaled) == {"servestack", "servestack-canary"}
    canary = scaled["servestack-canary"]
    assert canary["scaleTargetRef"]["name"] == "servestack-canary"
    # 10 % of 6 replicas, at least one.
    assert (canary["minReplicaCount"], canary["maxReplicaCount"], canary["fallback"]["replicas"]) == (1.0, 1.0, 1.0)
    assert [t["metadata"]["query"] for t in canary["triggers"]] == [
        f"sum(servestack_num_requests_waiting{{{CANARY_PODS}}})",
        f"sum(servestack_num_requests_running{{{CANARY_PODS}}}) / 8"]
    assert scaled["servestack"]["triggers"][0]["metadata"]["query"].endswith(f"{{{STABLE_PODS}}})")


def test_scaled_objects_validate_against_kedas_published_schema(canary_plan: dict[str, Any]) -> None:
    results = [r for r in validate_plan(canary_plan, "1.35") if r.kind == "ScaledObject"]
    assert sorted((r.name, r.error, r.skipped) for r in results) == [
        ("servestack", None, False), ("servestack-canary", None, False)]
    # The schema does check: a fallback without its replica count is refused.
    spec = scaled_object_spec("servestack", "servestack", 1, 2, 16, PROMETHEUS_URL)
    del spec["fallback"]["replicas"]
    (verdict,) = validate_custom_resources([{"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                                             "metadata": {"name": "x", "namespace": "servestack"}, "spec": spec}])
    assert verdict["error"] is not None and "replicas" in verdict["error"]


def test_the_policy_pack_passes_with_keda(plan: dict[str, Any], canary_plan: dict[str, Any]) -> None:
    assert [(v.policy, v.message) for v in check_plan(plan)] == []
    assert [(v.policy, v.message) for v in check_plan(canary_plan)] == []


# --- without the monitoring stack --------------------------------------------------------------------


def test_without_prometheus_the_hpa_scales_on_cpu_alone(stack_plan: Any) -> None:
    """A Pods metric would need an adapter nobody installs, and an HPA missing a metric never scales down."""
    plan = stack_plan("local")
    assert resources(plan, SCALED_OBJECT) == []
    assert [r for r in resources(plan, HELM) if r["inputs"]["chart"] == "keda"] == []
    hpa = inputs(plan, HPA)["spec"]
    assert hpa["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70.0}}}]
    assert hpa["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 600.0}}


@pytest.mark.parametrize("stack", ["aws-prod", "gcp-prod", "azure-prod"])
def test_the_prod_stacks_scale_on_the_queue_with_keda_on_the_system_nodes(stack: str, stack_plan: Any) -> None:
    """Monitoring is on in prod: KEDA runs where the platform puts add-ons (AKS taints its system pool with
    CriticalAddonsOnly), and each track has a ScaledObject instead of an HPA."""
    plan = stack_plan(stack)
    placement = {
        "aws-prod": ({"servestack.io/pool": "system"}, []),
        "gcp-prod": ({"servestack.io/pool": "system"}, []),
        "azure-prod": ({"kubernetes.azure.com/mode": "system"},
                       [{"key": "CriticalAddonsOnly", "operator": "Exists", "effect": "NoSchedule"}]),
    }[stack]
    values = inputs(plan, HELM, "servestack-keda")["values"]
    assert (values["nodeSelector"], values["tolerations"]) == placement
    assert resources(plan, HPA) == []
    (scaled,) = resources(plan, SCALED_OBJECT)
    assert scaled["inputs"]["spec"]["triggers"][0]["metadata"]["serverAddress"] == PROMETHEUS_URL


# --- turning monitoring on and off on a live stack ----------------------------------------------------

# The local stack's kubectl (stacks/Pulumi.local.yaml: the kind cluster's context).
LOCAL_KUBECTL = "kubectl --context kind-servestack"


def test_the_cpu_hpa_waits_for_kedas_hpa_to_go_and_is_only_forgotten(cpu_canary_plan: dict[str, Any]) -> None:
    """Monitoring off: per track, a command lets KEDA's HPA go before the CPU HPA of the same name is created;
    the CPU HPA is retained on delete (turning monitoring on, KEDA has taken it over) and owned by its
    Deployment, so that Kubernetes deletes it with the Deployment (a removed canary, destroy)."""
    assert resources(cpu_canary_plan, SCALED_OBJECT) == []
    deployments = {r["inputs"]["metadata"]["name"]: r for r in resources(cpu_canary_plan, DEPLOYMENT)}
    released = {r["name"]: r for r in resources(cpu_canary_plan, COMMAND) if r["name"].endswith("-keda-released")}
    assert set(released) == {"servestack-autoscaler-keda-released", "servestack-autoscaler-canary-keda-released"}
    hpas = {r["inputs"]["metadata"]["name"]: r for r in resources(cpu_canary_plan, HPA)}
    assert set(hpas) == {"servestack", "servestack-canary"}
    for track, command in (("servestack", "servestack-autoscaler-keda-released"),
                           ("servestack-canary", "servestack-autoscaler-canary-keda-released")):
        hpa, deployment = hpas[track], deployments[track]
        assert released[command]["inputs"] == {"create": release_script(LOCAL_KUBECTL, "servestack", track)}
        assert released[command]["urn"] in hpa["dependencies"]
        assert hpa.get("retainOnDelete") is True
        (owner,) = hpa["inputs"]["metadata"]["ownerReferences"]
        assert {k: owner[k] for k in ("apiVersion", "kind", "name")} == {
            "apiVersion": "apps/v1", "kind": "Deployment", "name": track}
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", owner["uid"])
        assert deployment["urn"] in hpa["propertyDependencies"]["metadata"]
    # The namespace is deleted by destroy (not retained), and everything left in it with it.
    (namespace,) = resources(cpu_canary_plan, "kubernetes:core/v1:Namespace")
    assert "retainOnDelete" not in namespace


def test_with_keda_no_command_waits_and_nothing_is_retained(canary_plan: dict[str, Any]) -> None:
    """Monitoring on: the ScaledObjects take the HPAs over; the command is gone with the CPU HPA (it has no
    delete step), to run again when monitoring is next turned off."""
    assert [r["name"] for r in resources(canary_plan, COMMAND) if "keda" in r["name"]] == []
    assert [r["name"] for r in resources(canary_plan, SCALED_OBJECT) if r.get("retainOnDelete")] == []


def test_the_policy_pack_passes_without_keda(cpu_canary_plan: dict[str, Any]) -> None:
    assert [(v.policy, v.message) for v in check_plan(cpu_canary_plan)] == []


# A stand-in kubectl: a cluster whose state (is KEDA's CRD there, the ScaledObject, the HPA) lives in a JSON
# file; KEDA's HPA goes with its ScaledObject as the garbage collector deletes it, a moment later (one more
# look); every call is logged.
FAKE_KUBECTL = """#!{python}
import json, sys
state_file, log_file = {state!r}, {log!r}
args = sys.argv[1:]
with open(log_file, "a") as log:
    log.write(" ".join(args) + "\\n")
state = json.load(open(state_file))
verb, kind, name = args[2], args[3], args[4]
if args[:2] == ["get", "crd"]:
    print("customresourcedefinition.apiextensions.k8s.io/scaledobjects.keda.sh" if state["crd"] else "")
    sys.exit(0)
if not state["crd"] and kind == "scaledobject":
    sys.exit("error: the server has no resource type scaledobject")
if verb == "get" and kind == "scaledobject":
    print("scaledobject.keda.sh/" + name if state["scaledobject"] else "")
elif verb == "delete" and kind == "scaledobject":
    state["scaledobject"] = False
    state["hpa_owner_deleted"] = True
elif verb == "get" and kind == "hpa":
    if state["hpa"] and state.get("hpa_owner_deleted") and not state.get("hpa_stays"):
        state["hpa_looks"] = state.get("hpa_looks", 0) + 1
        if state["hpa_looks"] > 1:
            state["hpa"] = False
    print("horizontalpodautoscaler.autoscaling/" + name if state["hpa"] else "")
else:
    sys.exit("unexpected call: " + " ".join(args))
json.dump(state, open(state_file, "w"))
"""


def _cluster(tmp: Path, **state: bool) -> tuple[Path, Path]:
    state_file, log = tmp / "state.json", tmp / "calls.log"
    state_file.write_text(json.dumps(state))
    log.write_text("")
    kubectl = tmp / "kubectl"
    kubectl.write_text(FAKE_KUBECTL.format(python=sys.executable, state=str(state_file), log=str(log)))
    kubectl.chmod(kubectl.stat().st_mode | stat.S_IXUSR)
    return state_file, log


def _release(tmp: Path, timeout_seconds: int = 60) -> subprocess.CompletedProcess[str]:
    script = release_script("kubectl", "servestack", "servestack", timeout_seconds=timeout_seconds)
    return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=90, check=False,
                          env={**os.environ, "PATH": f"{tmp}:{os.environ['PATH']}"})


GET_CRD = "get crd scaledobjects.keda.sh --ignore-not-found -o name"
GET_SCALED_OBJECT = "-n servestack get scaledobject servestack --ignore-not-found -o name"
GET_HPA = "-n servestack get hpa servestack --ignore-not-found -o name"


def test_turning_monitoring_off_deletes_the_scaled_object_and_waits_for_kedas_hpa(tmp_path: Path) -> None:
    state_file, log = _cluster(tmp_path, crd=True, scaledobject=True, hpa=True)
    result = _release(tmp_path)
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == [
        GET_CRD, GET_SCALED_OBJECT,
        "-n servestack delete scaledobject servestack --ignore-not-found --wait --timeout=60s",
        GET_HPA, GET_HPA]
    assert json.loads(state_file.read_text())["hpa"] is False  # the name is free for the CPU HPA
    assert "deleting the ScaledObject servestack/servestack" in result.stdout


@pytest.mark.parametrize(("state", "calls"), [
    ({"crd": False, "scaledobject": False, "hpa": False}, [GET_CRD]),  # KEDA never installed
    ({"crd": True, "scaledobject": False, "hpa": True}, [GET_CRD, GET_SCALED_OBJECT]),  # the CPU HPA is there
])
def test_without_a_scaled_object_nothing_is_deleted(tmp_path: Path, state: dict[str, bool], calls: list[str]) -> None:
    state_file, log = _cluster(tmp_path, **state)
    result = _release(tmp_path)
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == calls
    assert json.loads(state_file.read_text()) == state


def test_a_hpa_that_stays_ends_the_wait_with_what_to_do(tmp_path: Path) -> None:
    _cluster(tmp_path, crd=True, scaledobject=True, hpa=True, hpa_stays=True)
    result = _release(tmp_path, timeout_seconds=3)
    assert result.returncode == 1
    assert ("KEDA's HPA servestack/servestack is still there after 3 s; delete it "
            "(kubectl -n servestack delete hpa servestack), then run `pulumi up` again") in result.stderr


def test_the_release_script_refuses_names_that_are_not_kubernetes_names() -> None:
    with pytest.raises(ValueError, match=re.escape("deployment 'servestack; rm -rf /'")):
        release_script("kubectl", "servestack", "servestack; rm -rf /")
