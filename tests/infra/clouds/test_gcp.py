"""The GCP stacks' offline plans: network, firewall rules, GKE, node pools, registry, bucket, identity, serving."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.clouds.gcp import (
    ACME_DNS_PERMISSIONS,
    NODE_PORTS,
    SERVING_SERVICE_ACCOUNT,
    build,
    workload_identity_member,
)
from infra.clouds.gcp.kubeconfig import kubeconfig
from infra.clouds.gcp.zones import GPU_ZONES, gpu_zones
from infra.config import ConfigError, parse_config
from infra.platform import GPU_POOL_LABEL, GPU_POOL_VALUE
from servestack.check import check_plan
from servestack.offline.fakes import CloudError
from servestack.offline.fakes import gcp as fake_gcp
from servestack.offline.plan import STACKS_DIR, PlanError, plan_in_subprocess, read_stack_config
from servestack.offline.schemas import validate_plan
from tests.infra.plans import inputs, one, plan_unmasked, resources, stack_variant

STACKS = ("gcp-dev", "gcp-prod")
API = "gcp:projects/service:Service"
NETWORK = "gcp:compute/network:Network"
SUBNET = "gcp:compute/subnetwork:Subnetwork"
ROUTER = "gcp:compute/router:Router"
NAT = "gcp:compute/routerNat:RouterNat"
FIREWALL = "gcp:compute/firewall:Firewall"
CLUSTER = "gcp:container/cluster:Cluster"
POOL = "gcp:container/nodePool:NodePool"
ACCOUNT = "gcp:serviceaccount/account:Account"
SA_IAM = "gcp:serviceaccount/iAMMember:IAMMember"
PROJECT_IAM = "gcp:projects/iAMMember:IAMMember"
BUCKET_IAM = "gcp:storage/bucketIAMMember:BucketIAMMember"
REPO_IAM = "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember"
KEY_IAM = "gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember"
REPOSITORY = "gcp:artifactregistry/repository:Repository"
BUCKET = "gcp:storage/bucket:Bucket"
KEY_RING = "gcp:kms/keyRing:KeyRing"
KEY = "gcp:kms/cryptoKey:CryptoKey"
CUSTOM_ROLE = "gcp:projects/iAMCustomRole:IAMCustomRole"
ZONE_IAM = "gcp:dns/dnsManagedZoneIamMember:DnsManagedZoneIamMember"
RECORD = "gcp:dns/recordSet:RecordSet"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
ENVOY_PROXY = "kubernetes:gateway.envoyproxy.io/v1alpha1:EnvoyProxy"
HELM = "kubernetes:helm.sh/v3:Release"
IAM_TYPES = (SA_IAM, PROJECT_IAM, BUCKET_IAM, REPO_IAM, KEY_IAM, ZONE_IAM)
HEALTH_CHECK_RANGES = ["35.191.0.0/16", "209.85.152.0/22", "209.85.204.0/22"]

# cert-manager's: one more account and workload identity binding, the custom role, its grant on the zone, and the
# hostname's record.
ACME = {CUSTOM_ROLE: 1, ZONE_IAM: 1, RECORD: 1}
GCP_COUNTS = {
    "gcp-dev": {API: 10, NETWORK: 1, SUBNET: 1, ROUTER: 1, NAT: 1, FIREWALL: 7, CLUSTER: 1, POOL: 2, ACCOUNT: 3,
                SA_IAM: 2, PROJECT_IAM: 1, BUCKET_IAM: 1, REPO_IAM: 1, REPOSITORY: 1, BUCKET: 1, **ACME},
    "gcp-prod": {API: 11, NETWORK: 1, SUBNET: 1, ROUTER: 1, NAT: 1, FIREWALL: 7, CLUSTER: 1, POOL: 2, ACCOUNT: 3,
                 SA_IAM: 2, PROJECT_IAM: 1, BUCKET_IAM: 1, REPO_IAM: 1, KEY_IAM: 1, REPOSITORY: 1, BUCKET: 1,
                 KEY_RING: 1, KEY: 1, "gcp:projects/serviceIdentity:ServiceIdentity": 1, **ACME},
}


@pytest.fixture(scope="module", params=STACKS)
def plan(request: pytest.FixtureRequest, stack_plan: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    return stack_plan(request.param)


@pytest.fixture(scope="module")
def dev(stack_plan: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    return stack_plan("gcp-dev")


@pytest.fixture(scope="module")
def prod(stack_plan: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    return stack_plan("gcp-prod")


def _config(plan: Mapping[str, Any]) -> Any:
    return parse_config(plan["stack"], plan["config"])


def _by_urn(plan: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["urn"]: r for r in plan["resources"]}


def _email(plan: Mapping[str, Any], role: str) -> str:
    account = next(r for r in resources(plan, ACCOUNT) if r["inputs"]["accountId"].endswith(f"-{role}"))
    return f"{account['inputs']['accountId']}@{plan['config']['gcp:project']}.iam.gserviceaccount.com"


# --- the whole plan --------------------------------------------------------------------------------


def test_plan_declares_every_gcp_resource_once(plan: dict[str, Any]) -> None:
    counts: dict[str, int] = {}
    for r in plan["resources"]:
        if r["type"].startswith("gcp:"):
            counts[r["type"]] = counts.get(r["type"], 0) + 1
    assert counts == GCP_COUNTS[plan["stack"]]


def test_every_gcp_resource_is_a_child_of_the_gpu_cluster_component(plan: dict[str, Any]) -> None:
    """All but the hostname's record, which the gateway makes once its load balancer has an address."""
    component = one(plan, "servestack:gcp:GpuCluster")
    assert not component["custom"]
    for r in plan["resources"]:
        if (r["type"].startswith("gcp:") and r["type"] != RECORD) or r["type"] == "pulumi:providers:kubernetes":
            assert r["parent"] == component["urn"], r["name"]
    assert one(plan, RECORD)["parent"] == one(plan, "servestack:kubernetes:EntryGateway")["urn"]


def test_apis_are_enabled_and_stay_enabled_on_destroy(plan: dict[str, Any]) -> None:
    services = {r["inputs"]["service"]: r["inputs"] for r in resources(plan, API)}
    for api in ("container.googleapis.com", "compute.googleapis.com", "artifactregistry.googleapis.com",
                "iamcredentials.googleapis.com", "cloudresourcemanager.googleapis.com"):
        assert api in services
    assert ("cloudkms.googleapis.com" in services) == (plan["stack"] == "gcp-prod")
    assert all(s["disableOnDestroy"] is False for s in services.values())


def test_plans_pass_the_policy_pack(plan: dict[str, Any]) -> None:
    assert [(v.policy, v.urn, v.message) for v in check_plan(plan)] == []


def test_kubernetes_objects_validate_and_no_device_plugin_is_installed(plan: dict[str, Any]) -> None:
    results = validate_plan(plan, "1.35")
    assert results and all(r.error is None for r in results), [r.error for r in results if r.error]
    # GKE installs the driver and runs its own device plugin.
    assert resources(plan, "kubernetes:apps/v1:DaemonSet") == []


# --- network ---------------------------------------------------------------------------------------


def test_custom_mode_vpc_with_one_subnetwork_with_pod_and_service_ranges(plan: dict[str, Any]) -> None:
    config = _config(plan)
    network = one(plan, NETWORK)
    assert network["inputs"]["autoCreateSubnetworks"] is False
    subnet = inputs(plan, SUBNET)
    assert subnet["region"] == "us-central1"
    assert subnet["ipCidrRange"] == config.gcp.network_cidr == "10.10.0.0/20"
    assert subnet["privateIpGoogleAccess"] is True
    assert subnet["secondaryIpRanges"] == [{"rangeName": "pods", "ipCidrRange": "10.64.0.0/14"},
                                           {"rangeName": "services", "ipCidrRange": "10.68.0.0/20"}]
    assert subnet["network"].startswith(f"projects/{plan['config']['gcp:project']}/global/networks/{network['name']}-")


def test_flow_logs_in_prod_only(dev: dict[str, Any], prod: dict[str, Any]) -> None:
    assert "logConfig" not in inputs(dev, SUBNET)
    assert inputs(prod, SUBNET)["logConfig"] == {"aggregationInterval": "INTERVAL_5_SEC", "flowSampling": 0.5,
                                                 "metadata": "INCLUDE_ALL_METADATA"}


def test_cloud_nat_gives_the_subnetwork_egress(plan: dict[str, Any]) -> None:
    router, nat, subnet = inputs(plan, ROUTER), inputs(plan, NAT), one(plan, SUBNET)
    assert router["network"] == inputs(plan, SUBNET)["network"]
    assert nat["router"].startswith("servestack-router-")
    assert nat["natIpAllocateOption"] == "AUTO_ONLY"
    assert nat["sourceSubnetworkIpRangesToNat"] == "LIST_OF_SUBNETWORKS"
    assert len(nat["subnetworks"]) == 1
    assert nat["subnetworks"][0]["sourceIpRangesToNats"] == ["ALL_IP_RANGES"]
    assert f"/regions/us-central1/subnetworks/{subnet['name']}-" in nat["subnetworks"][0]["name"]


# --- firewall rules --------------------------------------------------------------------------------


def _rules(plan: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r["inputs"] for r in resources(plan, FIREWALL)}


def world_openings(plan: Mapping[str, Any]) -> list[str]:
    """Allow rules admitting sources outside the stack's own ranges (nodes, pods, control plane) to
    anything but the LB port from the allowed client CIDRs, or Google's health checks to the serving
    ports. Documentation ranges such as 203.0.113.0/24 count as outside, as any client's would."""
    config = _config(plan)
    own = [ipaddress.ip_network(c) for c in (config.gcp.network_cidr, config.gcp.pods_cidr, config.gcp.master_cidr)]
    lb = {"protocol": "tcp", "ports": [str(port) for port in config.entry_ports]}
    found = []
    for name, rule in _rules(plan).items():
        if rule.get("direction", "INGRESS") != "INGRESS" or not rule.get("allows"):
            continue
        sources = rule.get("sourceRanges") or ["0.0.0.0/0"]  # no source at all means the world to GCP
        outside = [s for s in sources if not any(
            ipaddress.ip_network(s).version == n.version and ipaddress.ip_network(s).subnet_of(n)  # type: ignore[arg-type]
            for n in own)]
        if not outside:
            continue
        health_checks = sorted(outside) == sorted(HEALTH_CHECK_RANGES) and all(
            a["protocol"] == "tcp" and a["ports"] == [NODE_PORTS] for a in rule["allows"])
        lb_clients = set(outside) <= set(config.access.endpoint_cidrs) and rule["allows"] == [lb]
        if not (health_checks or lb_clients):
            found.append(f"{name}: {outside} -> {rule['allows']}")
    return found


def test_no_firewall_rule_admits_the_internet_beyond_the_load_balancer_port(plan: dict[str, Any]) -> None:
    assert world_openings(plan) == []
    # Of the rules that admit anything, only the client rule takes sources from outside the stack's own
    # ranges and Google's health checkers; no allow rule names the world unless the clients are the world.
    config = _config(plan)
    for name, rule in _rules(plan).items():
        if rule.get("allows") and name != "servestack-allow-lb-clients":
            assert not {"0.0.0.0/0", "::/0"} & set(rule["sourceRanges"]), name
    assert "0.0.0.0/0" not in config.access.endpoint_cidrs


def test_the_world_check_catches_a_rule_opening_another_port() -> None:
    plan = {"stack": "gcp-dev", "config": read_stack_config("gcp-dev"), "resources": [
        {"type": FIREWALL, "name": "ssh", "inputs": {"sourceRanges": ["0.0.0.0/0"],
                                                     "allows": [{"protocol": "tcp", "ports": ["22"]}]}},
        {"type": FIREWALL, "name": "no-source", "inputs": {"allows": [{"protocol": "tcp", "ports": ["80"]}]}},
        {"type": FIREWALL, "name": "hc-ssh", "inputs": {"sourceRanges": HEALTH_CHECK_RANGES,
                                                        "allows": [{"protocol": "tcp", "ports": ["22"]}]}},
        {"type": FIREWALL, "name": "clients-all-ports", "inputs": {"sourceRanges": ["203.0.113.0/24"],
                                                                   "allows": [{"protocol": "tcp"}]}},
        {"type": FIREWALL, "name": "internal", "inputs": {"sourceRanges": ["10.10.0.0/20", "10.64.0.0/14"],
                                                          "allows": [{"protocol": "tcp"}]}},
        {"type": FIREWALL, "name": "clients-lb", "inputs": {"sourceRanges": ["203.0.113.0/24"],
                                                            "allows": [{"protocol": "tcp", "ports": ["80", "443"]}]}},
    ]}
    assert [f.split(":")[0] for f in world_openings(plan)] == ["ssh", "no-source", "hc-ssh", "clients-all-ports"]


def test_every_firewall_rule_is_explicit_with_description_priority_and_node_target(plan: dict[str, Any]) -> None:
    tag = f"servestack-{plan['stack']}-node"
    for name, rule in _rules(plan).items():
        assert rule["description"].startswith(f"servestack {plan['stack']}: "), name
        assert isinstance(rule["priority"], float), name
        assert rule["direction"] == "INGRESS", name
        if rule.get("allows"):
            assert rule["targetTags"] == [tag], name
            assert rule["priority"] == 1000.0, name
    # The nodes carry that tag.
    assert inputs(plan, POOL, "servestack-gpu-pool")["nodeConfig"]["tags"] == [tag]
    assert inputs(plan, POOL, "servestack-system-pool")["nodeConfig"]["tags"] == [tag]


def test_load_balancer_clients_reach_only_the_entry_ports(plan: dict[str, Any]) -> None:
    """The gateway's listeners: 443, and 80, which only redirects to it. The passthrough load balancer delivers
    to whichever node runs the Envoy pods (the system pool, which carries the same node tag)."""
    rule = _rules(plan)["servestack-allow-lb-clients"]
    assert rule["sourceRanges"] == ["203.0.113.0/24"]
    assert rule["allows"] == [{"protocol": "tcp", "ports": ["80", "443"]}]


def test_health_checks_reach_only_the_node_ports(plan: dict[str, Any]) -> None:
    """An external passthrough load balancer with externalTrafficPolicy Local probes the Service's
    healthCheckNodePort, from the ranges Google lists for it."""
    rule = _rules(plan)["servestack-allow-health-checks"]
    assert rule["sourceRanges"] == ["35.191.0.0/16", "209.85.152.0/22", "209.85.204.0/22"]
    assert rule["allows"] == [{"protocol": "tcp", "ports": ["30000-32767"]}]


def test_control_plane_reaches_kubelet_and_webhooks(plan: dict[str, Any]) -> None:
    rule = _rules(plan)["servestack-allow-control-plane"]
    assert rule["sourceRanges"] == [inputs(plan, CLUSTER)["privateClusterConfig"]["masterIpv4CidrBlock"]]
    assert rule["allows"] == [{"protocol": "tcp", "ports": ["443", "6443", "8443", "9443", "10250"]}]


def test_nodes_and_pods_reach_each_other_inside_the_vpc(plan: dict[str, Any]) -> None:
    rules = _rules(plan)
    for protocol in ("tcp", "udp", "icmp"):
        rule = rules[f"servestack-allow-internal-{protocol}"]
        assert rule["sourceRanges"] == ["10.10.0.0/20", "10.64.0.0/14"]
        assert rule["allows"] == [{"protocol": protocol}]


def test_low_priority_deny_all_is_logged_in_prod(plan: dict[str, Any]) -> None:
    rule = _rules(plan)["servestack-deny-all-ingress"]
    assert rule["priority"] == 65534.0  # below GKE's own rules (1000), so its load-balancer rules still apply
    assert rule["sourceRanges"] == ["0.0.0.0/0"]
    assert rule["denies"] == [{"protocol": "all"}]
    assert "allows" not in rule and "targetTags" not in rule
    # Scanners knock on the load balancer all day: every refusal logged is paid for, in prod only.
    assert rule.get("logConfig") == ({"metadata": "INCLUDE_ALL_METADATA"} if plan["stack"] == "gcp-prod" else None)


def test_allow_rules_are_logged_in_prod_only(dev: dict[str, Any], prod: dict[str, Any]) -> None:
    assert all("logConfig" not in r for n, r in _rules(dev).items() if "deny" not in n)
    assert all(r["logConfig"] == {"metadata": "INCLUDE_ALL_METADATA"} for r in _rules(prod).values())


def test_ipv4_and_ipv6_clients_get_only_the_load_balancer_port(tmp_path: Path) -> None:
    document = yaml.safe_load((STACKS_DIR / "Pulumi.gcp-dev.yaml").read_text())
    document["config"]["servestack:access"]["endpointCidrs"] = ["198.51.100.0/24", "2001:db8::/32"]
    (tmp_path / "Pulumi.gcp-dev.yaml").write_text(yaml.safe_dump(document))
    plan = plan_unmasked("gcp-dev", tmp_path)
    rules = _rules(plan)
    # A firewall rule cannot mix IPv4 and IPv6 ranges: one rule per family, both on the LB port only.
    assert rules["servestack-allow-lb-clients"]["sourceRanges"] == ["198.51.100.0/24"]
    assert rules["servestack-allow-lb-clients-v6"]["sourceRanges"] == ["2001:db8::/32"]
    for name in ("servestack-allow-lb-clients", "servestack-allow-lb-clients-v6"):
        assert rules[name]["allows"] == [{"protocol": "tcp", "ports": ["80", "443"]}]
    assert world_openings(plan) == []
    assert [v.message for v in check_plan(plan) if v.type == FIREWALL and v.level == "mandatory"] == []


def test_internal_load_balancer_admits_only_the_vpc(tmp_path: Path) -> None:
    document = yaml.safe_load((STACKS_DIR / "Pulumi.gcp-dev.yaml").read_text())
    document["config"]["servestack:access"] = {"internalLoadBalancer": True}
    (tmp_path / "Pulumi.gcp-dev.yaml").write_text(yaml.safe_dump(document))
    plan = plan_unmasked("gcp-dev", tmp_path)
    rule = _rules(plan)["servestack-allow-lb-clients"]
    assert rule["sourceRanges"] == ["10.10.0.0/20"]
    assert rule["allows"] == [{"protocol": "tcp", "ports": ["80", "443"]}]
    # GKE gives an internal load balancer an address in the VPC: the hostname's A record points there.
    assert plan["outputs"]["address"].startswith("10.")
    assert inputs(plan, RECORD)["rrdatas"] == [plan["outputs"]["address"]]
    # An internal passthrough load balancer's health checks come from other ranges.
    assert _rules(plan)["servestack-allow-health-checks"]["sourceRanges"] == ["35.191.0.0/16", "130.211.0.0/22"]
    service = _envoy_service(plan)
    # GKE ignores the backend-service annotation on an internal load balancer.
    assert service["annotations"] == {"cloud.google.com/l4-rbs": "enabled",
                                      "networking.gke.io/load-balancer-type": "Internal"}
    assert "loadBalancerSourceRanges" not in service


# --- cluster ---------------------------------------------------------------------------------------


def test_cluster_is_private_vpc_native_with_workload_identity(plan: dict[str, Any]) -> None:
    cluster = inputs(plan, CLUSTER)
    network, subnet = one(plan, NETWORK), one(plan, SUBNET)
    assert cluster["privateClusterConfig"]["enablePrivateNodes"] is True
    assert cluster["privateClusterConfig"]["masterIpv4CidrBlock"] == "172.16.0.32/28"
    assert cluster["networkingMode"] == "VPC_NATIVE"
    assert cluster["ipAllocationPolicy"] == {"clusterSecondaryRangeName": "pods",
                                             "servicesSecondaryRangeName": "services"}
    assert f"/networks/{network['name']}-" in cluster["network"]
    assert f"/subnetworks/{subnet['name']}-" in cluster["subnetwork"]
    assert cluster["workloadIdentityConfig"] == {"workloadPool": f"{plan['config']['gcp:project']}.svc.id.goog"}
    assert cluster["removeDefaultNodePool"] is True
    assert cluster["releaseChannel"] == {"channel": "REGULAR"}
    assert cluster["minMasterVersion"] == "1.35"
    assert cluster["datapathProvider"] == "ADVANCED_DATAPATH"
    assert "networkPolicy" not in cluster  # Dataplane V2 enforces policies; the add-on must stay off
    assert cluster["enableShieldedNodes"] is True
    assert cluster["enableLegacyAbac"] is False
    assert cluster["masterAuth"] == {"clientCertificateConfig": {"issueClientCertificate": False}}
    assert cluster["loggingConfig"] == {"enableComponents": ["SYSTEM_COMPONENTS", "WORKLOADS"]}
    assert cluster["monitoringConfig"]["enableComponents"] == ["SYSTEM_COMPONENTS", "DCGM"]
    assert cluster["monitoringConfig"]["managedPrometheus"] == {"enabled": True}
    # Even the short-lived default pool runs as the dedicated node account.
    assert cluster["nodeConfig"]["serviceAccount"] == _email(plan, "nodes")
    assert cluster["nodeConfig"]["workloadMetadataConfig"] == {"mode": "GKE_METADATA"}


def test_api_is_private_ip_endpoints_and_the_dns_endpoint_for_the_deployer(plan: dict[str, Any]) -> None:
    """Google's recommended control-plane access (and CIS GKE 5.6.4): IP endpoints private, the DNS endpoint
    open to outside traffic and authorized by IAM, so that a laptop or a hosted CI runner reaches it."""
    cluster = inputs(plan, CLUSTER)
    assert cluster["privateClusterConfig"]["enablePrivateEndpoint"] is True
    assert cluster["controlPlaneEndpointsConfig"] == {"dnsEndpointConfig": {"allowExternalTraffic": True}}
    assert cluster["masterAuthorizedNetworksConfig"] == {
        "cidrBlocks": [{"cidrBlock": "10.10.0.0/20", "displayName": "servestack VPC"}],
        "gcpPublicCidrsAccessEnabled": False}


def test_public_ip_endpoint_admits_the_listed_operators_and_the_vpc(tmp_path: Path) -> None:
    document = yaml.safe_load((STACKS_DIR / "Pulumi.gcp-dev.yaml").read_text())
    document["config"]["servestack:access"] = {"endpointCidrs": ["203.0.113.0/24"], "apiAccess": "public",
                                               "apiCidrs": ["198.51.100.0/24"]}
    (tmp_path / "Pulumi.gcp-dev.yaml").write_text(yaml.safe_dump(document))
    plan = plan_unmasked("gcp-dev", tmp_path)
    cluster = inputs(plan, CLUSTER)
    assert cluster["privateClusterConfig"]["enablePrivateEndpoint"] is False
    assert "controlPlaneEndpointsConfig" not in cluster
    assert cluster["masterAuthorizedNetworksConfig"]["cidrBlocks"] == [
        {"cidrBlock": "10.10.0.0/20", "displayName": "servestack VPC"},
        {"cidrBlock": "198.51.100.0/24", "displayName": "operators 198.51.100.0/24"}]
    kubeconfig = yaml.safe_load(one(plan, "pulumi:providers:kubernetes")["inputs"]["kubeconfig"])
    server = kubeconfig["clusters"][0]["cluster"]
    assert server["server"].startswith("https://34.") and server["certificate-authority-data"]


def test_gpu_upgrades_replace_a_node_in_place(plan: dict[str, Any]) -> None:
    """No surge node: no ninth L4 (quota, dollars, a stockout) during an upgrade at full scale."""
    assert inputs(plan, POOL, "servestack-gpu-pool")["upgradeSettings"] == {
        "strategy": "SURGE", "maxSurge": 0.0, "maxUnavailable": 1.0}


def test_dev_cluster_is_zonal_and_unprotected(dev: dict[str, Any]) -> None:
    cluster = inputs(dev, CLUSTER)
    assert cluster["location"] == "us-central1-a"
    assert cluster["deletionProtection"] is False
    assert "databaseEncryption" not in cluster
    assert "maintenancePolicy" not in cluster


def test_prod_cluster_is_regional_private_endpoint_with_kms_secrets(prod: dict[str, Any]) -> None:
    cluster = one(prod, CLUSTER)
    props = cluster["inputs"]
    assert props["location"] == "us-central1"
    assert props["privateClusterConfig"]["enablePrivateEndpoint"] is True
    assert props["masterAuthorizedNetworksConfig"] == {
        "cidrBlocks": [{"cidrBlock": "10.10.0.0/20", "displayName": "servestack VPC"}],
        "gcpPublicCidrsAccessEnabled": False}
    assert props["deletionProtection"] is True
    # Turned off (and `up`) before a `destroy`.
    values = read_stack_config("gcp-prod")
    values["servestack:gcp"] = {**values["servestack:gcp"], "deletionProtection": False}
    assert parse_config("gcp-prod", values).gcp.deletion_protection is False
    assert props["maintenancePolicy"] == {"recurringWindow": {
        "startTime": "2025-01-04T02:00:00Z", "endTime": "2025-01-04T10:00:00Z",
        "recurrence": "FREQ=WEEKLY;BYDAY=SA,SU"}}
    key, ring = one(prod, KEY), one(prod, KEY_RING)
    assert props["databaseEncryption"]["state"] == "ENCRYPTED"
    # Named with a suffix of this life of the stack: GCP keeps a key ring (and a key's name) forever.
    assert re.search(r"/keyRings/servestack-gcp-prod-[a-z0-9]{6}/cryptoKeys/secrets-[a-z0-9]{6}$",
                     props["databaseEncryption"]["keyName"])
    assert key["inputs"]["name"].startswith("secrets-") and ring["inputs"]["name"].startswith("servestack-gcp-prod-")
    assert ring["inputs"]["location"] == "us-central1"
    assert key["inputs"]["rotationPeriod"] == "7776000s" and key["inputs"]["purpose"] == "ENCRYPT_DECRYPT"
    grant = one(prod, KEY_IAM)
    assert grant["inputs"]["role"] == "roles/cloudkms.cryptoKeyEncrypterDecrypter"
    assert grant["inputs"]["member"] == ("serviceAccount:service-123456789012@container-engine-robot"
                                         ".iam.gserviceaccount.com")
    # GKE must be allowed to use the key before the cluster is created.
    assert grant["urn"] in cluster["dependencies"]


# --- node pools ------------------------------------------------------------------------------------


def test_system_pool_is_small_cpu_and_untainted(plan: dict[str, Any]) -> None:
    pool = inputs(plan, POOL, "servestack-system-pool")
    node = pool["nodeConfig"]
    assert node["machineType"] == "e2-standard-2"
    assert "guestAccelerators" not in node and "taints" not in node
    assert node["serviceAccount"] == _email(plan, "nodes")
    assert pool["autoscaling"]["totalMinNodeCount"] >= 1


def test_gpu_pool_accelerator_taint_labels_and_identity(plan: dict[str, Any]) -> None:
    pool = one(plan, POOL, "servestack-gpu-pool")
    props, node = pool["inputs"], pool["inputs"]["nodeConfig"]
    assert node["machineType"] == "g2-standard-4"
    assert node["guestAccelerators"] == [{"type": "nvidia-l4", "count": 1.0,
                                          "gpuDriverInstallationConfig": {"gpuDriverVersion": "LATEST"}}]
    assert node["taints"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"}]
    assert node["labels"] == {GPU_POOL_LABEL: GPU_POOL_VALUE}
    assert node["workloadMetadataConfig"] == {"mode": "GKE_METADATA"}
    assert node["serviceAccount"] == _email(plan, "nodes")
    assert node["oauthScopes"] == ["https://www.googleapis.com/auth/cloud-platform"]
    assert node["shieldedInstanceConfig"] == {"enableSecureBoot": True, "enableIntegrityMonitoring": True}
    assert node["metadata"] == {"disable-legacy-endpoints": "true"}
    assert node["imageType"] == "COS_CONTAINERD"
    # Every zone of us-central1 that offers L4 GPUs.
    assert props["nodeLocations"] == ["us-central1-a", "us-central1-b", "us-central1-c"]
    assert props["initialNodeCount"] == 0.0
    assert props["management"] == {"autoRepair": True, "autoUpgrade": True}
    # Added after the CPU pool, so that GKE sees a non-GPU pool (and its own taint logic agrees).
    system = one(plan, POOL, "servestack-system-pool")
    assert system["urn"] in pool["dependencies"]


def test_spot_gpu_nodes_give_the_serving_pods_time_to_drain(dev: dict[str, Any], prod: dict[str, Any]) -> None:
    """Kubernetes review M3, GCP review F6: GKE's graceful node shutdown on a spot pool, extended to the 120 s GKE
    allows (15 s of it for system-critical pods), which the drain timeline counts on; on-demand pools keep
    GKE's own settings (the field is for spot and preemptible pools only)."""
    assert inputs(dev, POOL, "servestack-gpu-pool")["nodeConfig"]["kubeletConfig"] == {
        "shutdownGracePeriodSeconds": 120.0, "shutdownGracePeriodCriticalPodsSeconds": 15.0}
    assert "kubeletConfig" not in inputs(prod, POOL, "servestack-gpu-pool")["nodeConfig"]
    assert "kubeletConfig" not in inputs(dev, POOL, "servestack-system-pool")["nodeConfig"]


def test_a_spot_pool_on_a_gke_without_the_longer_shutdown_is_refused_by_name() -> None:
    values = {**VALID_GCP, "servestack:kubernetesVersion": "1.34",
              "servestack:gpu": {**VALID_GCP["servestack:gpu"], "spot": True}}
    with pytest.raises(ConfigError) as error:
        build(parse_config("gcp-dev", values, date(2026, 11, 29)))
    assert error.value.problems == [
        "servestack:kubernetesVersion: '1.34', but the spot GPU pool's graceful node shutdown (120 s, which the "
        "serving pods' drain counts on) needs GKE 1.35.0-gke.1171000 or later: use 1.35 or later, or on-demand nodes "
        "(servestack:gpu.spot false)"]


@pytest.mark.parametrize(("node_config", "version", "refusal"), [
    ({"spot": True, "kubeletConfig": {"shutdownGracePeriodSeconds": 60}}, "1.35",
     "Invalid value for nodePool.config.kubeletConfig.shutdownGracePeriodSeconds: 60; allowed: 0, 30, 120"),
    ({"kubeletConfig": {"shutdownGracePeriodSeconds": 120}}, "1.35", "can only be set on node pools of Spot or "
                                                                      "preemptible VMs"),
    ({"spot": True, "kubeletConfig": {"shutdownGracePeriodSeconds": 120}}, "1.34", "requires GKE version "
                                                                                   "1.35.0-gke.1171000 or later"),
    ({"spot": True, "kubeletConfig": {"shutdownGracePeriodSeconds": 30,
                                      "shutdownGracePeriodCriticalPodsSeconds": 45}}, "1.35", "must not exceed"),
], ids=["not-offered", "on-demand", "old-gke", "critical-over-total"])
def test_the_fake_gke_refuses_a_graceful_shutdown_gke_does_not_offer(node_config: dict[str, Any], version: str,
                                                                     refusal: str) -> None:
    with pytest.raises(CloudError) as error:
        fake_gcp._check_shutdown(node_config, version)
    assert refusal in str(error.value)
    fake_gcp._check_shutdown({"spot": True, "kubeletConfig": {"shutdownGracePeriodSeconds": 120,
                                                              "shutdownGracePeriodCriticalPodsSeconds": 15}}, "1.35")


def test_gpu_pool_autoscaling_and_spot(dev: dict[str, Any], prod: dict[str, Any]) -> None:
    dev_pool, prod_pool = inputs(dev, POOL, "servestack-gpu-pool"), inputs(prod, POOL, "servestack-gpu-pool")
    assert dev_pool["autoscaling"] == {"totalMinNodeCount": 0.0, "totalMaxNodeCount": 2.0, "locationPolicy": "ANY"}
    assert dev_pool["nodeConfig"]["spot"] is True
    assert prod_pool["autoscaling"] == {"totalMinNodeCount": 1.0, "totalMaxNodeCount": 8.0,
                                        "locationPolicy": "BALANCED"}
    assert prod_pool["nodeConfig"]["spot"] is False
    assert "preemptible" not in dev_pool["nodeConfig"] and "preemptible" not in prod_pool["nodeConfig"]
    assert prod_pool["nodeConfig"]["diskSizeGb"] == 200.0


# --- identity --------------------------------------------------------------------------------------


def test_node_service_account_has_only_the_node_role_and_registry_read(plan: dict[str, Any]) -> None:
    member = f"serviceAccount:{_email(plan, 'nodes')}"
    grants = sorted((r["type"], r["inputs"]["role"]) for t in IAM_TYPES for r in resources(plan, t)
                    if r["inputs"]["member"] == member)
    assert grants == [(REPO_IAM, "roles/artifactregistry.reader"),
                      (PROJECT_IAM, "roles/container.defaultNodeServiceAccount")]
    assert inputs(plan, REPO_IAM)["repository"] == inputs(plan, REPOSITORY)["repositoryId"]


def test_workload_identity_binds_exactly_the_serving_service_account(plan: dict[str, Any]) -> None:
    project, namespace = plan["config"]["gcp:project"], "servestack"
    binding = one(plan, SA_IAM, "servestack-serving-workload-identity")
    assert binding["inputs"]["role"] == "roles/iam.workloadIdentityUser"
    assert binding["inputs"]["member"] == f"serviceAccount:{project}.svc.id.goog[servestack/servestack]"
    assert binding["inputs"]["member"] == workload_identity_member(project, namespace, SERVING_SERVICE_ACCOUNT)
    email = _email(plan, "serving")
    assert binding["inputs"]["serviceAccountId"] == f"projects/{project}/serviceAccounts/{email}"
    # The workload pool exists only once the cluster does.
    assert one(plan, CLUSTER)["urn"] in binding["dependencies"]
    # The Kubernetes service account the binding names is the one the serving pods run as.
    k8s_sa = inputs(plan, "kubernetes:core/v1:ServiceAccount")
    assert (k8s_sa["metadata"]["namespace"], k8s_sa["metadata"]["name"]) == (namespace, SERVING_SERVICE_ACCOUNT)
    assert k8s_sa["metadata"]["annotations"] == {"iam.gke.io/gcp-service-account": email}
    pod = inputs(plan, DEPLOYMENT, "servestack-deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == SERVING_SERVICE_ACCOUNT


def test_serving_account_may_read_the_model_bucket_and_nothing_else(plan: dict[str, Any]) -> None:
    member = f"serviceAccount:{_email(plan, 'serving')}"
    grants = [(r["type"], r["inputs"]["role"]) for t in IAM_TYPES for r in resources(plan, t)
              if r["inputs"]["member"] == member]
    assert grants == [(BUCKET_IAM, "roles/storage.objectViewer")]
    bucket = one(plan, BUCKET)
    assert inputs(plan, BUCKET_IAM)["bucket"].startswith(f"{bucket['name']}-")


# --- registry and bucket ---------------------------------------------------------------------------


def test_registry_is_a_regional_docker_repository_the_deployment_pulls_from(plan: dict[str, Any]) -> None:
    repo = inputs(plan, REPOSITORY)
    stack, project = plan["stack"], plan["config"]["gcp:project"]
    assert repo["format"] == "DOCKER" and repo["location"] == "us-central1"
    assert repo["repositoryId"] == f"servestack-{stack}"
    assert repo["dockerConfig"] == {"immutableTags": stack == "gcp-prod"}
    image = inputs(plan, DEPLOYMENT, "servestack-deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"us-central1-docker.pkg.dev/{project}/servestack-{stack}/servestack-serving:0.1.0"


def test_model_bucket_is_private_uniform_and_versioned(plan: dict[str, Any]) -> None:
    bucket = inputs(plan, BUCKET)
    assert bucket["location"] == "US-CENTRAL1"
    assert bucket["uniformBucketLevelAccess"] is True
    assert bucket["publicAccessPrevention"] == "enforced"
    assert bucket["versioning"] == {"enabled": True}
    assert bucket["forceDestroy"] is (plan["stack"] == "gcp-dev")


def test_prod_fetches_the_model_from_the_stack_bucket(prod: dict[str, Any]) -> None:
    bucket = one(prod, BUCKET)
    pod = inputs(prod, DEPLOYMENT, "servestack-deployment")["spec"]["template"]["spec"]
    fetch = pod["initContainers"][0]
    assert fetch["command"][:3] == ["python", "-m", "serving.fetch"]
    assert fetch["command"][3].startswith(f"gs://{bucket['name']}-") and fetch["command"][3].endswith("/models/tiny/r1")
    # `up` waits until the revision's manifest (uploaded last) is in the bucket.
    check = inputs(prod, "command:local:Command", "servestack-wait-for-model")["create"]
    assert re.search(rf"storage ls gs://{bucket['name']}-[0-9a-f]+/models/tiny/r1/manifest\.json", check)


# --- Kubernetes access and serving -----------------------------------------------------------------


def test_serving_pods_select_and_tolerate_the_gpu_pool(plan: dict[str, Any]) -> None:
    pod = inputs(plan, DEPLOYMENT, "servestack-deployment")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {GPU_POOL_LABEL: GPU_POOL_VALUE}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present",
                                   "effect": "NoSchedule"}]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_kubernetes_objects_use_the_cluster_provider_with_a_secret_kubeconfig(plan: dict[str, Any]) -> None:
    provider = one(plan, "pulumi:providers:kubernetes")
    assert provider["inputs"]["kubeconfig"] == "[secret]"
    by_urn = _by_urn(plan)
    for r in plan["resources"]:
        if r["type"].startswith("kubernetes:") and r["custom"]:
            assert r["provider"] == provider["urn"], r["name"]
    namespace = one(plan, "kubernetes:core/v1:Namespace", "servestack-namespace")
    pools = [r["urn"] for r in resources(plan, POOL)]
    assert set(pools) <= set(namespace["dependencies"]), [by_urn[u]["name"] for u in namespace["dependencies"]]
    # The serving pods fetch the model as their Google account at first start: the Workload Identity
    # binding and the bucket grant come first.
    assert {one(plan, SA_IAM, "servestack-serving-workload-identity")["urn"],
            one(plan, BUCKET_IAM)["urn"]} <= set(namespace["dependencies"])


# --- the gateway: its load balancer, its hostname, its certificate ------------------------------------


def _envoy_service(plan: Mapping[str, Any]) -> dict[str, Any]:
    service: dict[str, Any] = inputs(plan, ENVOY_PROXY)["spec"]["provider"]["kubernetes"]["envoyService"]
    return service


def test_the_gateway_is_a_backend_service_load_balancer_on_the_system_nodes(plan: dict[str, Any]) -> None:
    """Kubernetes review M10: GKE's backend-service passthrough NLB (GKE recommends it over target pools); its
    health checks come from the ranges the health-check rule admits, to the health-check node port."""
    service = _envoy_service(plan)
    assert service["annotations"] == {"cloud.google.com/l4-rbs": "enabled"}
    assert (service["type"], service["externalTrafficPolicy"]) == ("LoadBalancer", "Local")
    assert service["loadBalancerSourceRanges"] == ["203.0.113.0/24"]
    assert _rules(plan)["servestack-allow-health-checks"]["sourceRanges"] == HEALTH_CHECK_RANGES
    system = {GPU_POOL_LABEL: "system"}
    pod = inputs(plan, ENVOY_PROXY)["spec"]["provider"]["kubernetes"]["envoyDeployment"]["pod"]
    assert pod["nodeSelector"] == system and "tolerations" not in pod
    assert inputs(plan, HELM, "servestack-cert-manager")["values"]["nodeSelector"] == system
    assert inputs(plan, POOL, "servestack-system-pool")["nodeConfig"]["labels"] == system


def test_the_hostname_is_an_a_record_for_the_load_balancer_in_the_zone(plan: dict[str, Any]) -> None:
    hostname = plan["config"]["servestack:gateway"]["hostname"]
    assert plan["outputs"]["endpoint"] == f"https://{hostname}"
    assert re.fullmatch(r"203\.0\.113\.\d+", plan["outputs"]["address"])
    record = one(plan, RECORD)
    assert record["inputs"] == {"project": plan["config"]["gcp:project"], "managedZone": "servestack-example",
                                "name": f"{hostname}.", "type": "A", "ttl": 300.0,
                                "rrdatas": [plan["outputs"]["address"]]}


def test_cert_manager_may_change_record_sets_of_the_zone_and_nothing_else(plan: dict[str, Any]) -> None:
    """What cert-manager's Cloud DNS solver calls with the zone given (no zone lookup), in a custom role granted
    on the one managed zone: Cloud DNS has no grant narrower than a zone."""
    project, email = plan["config"]["gcp:project"], _email(plan, "acme")
    member = f"serviceAccount:{email}"
    role = one(plan, CUSTOM_ROLE)
    assert role["inputs"]["permissions"] == list(ACME_DNS_PERMISSIONS) == [
        "dns.changes.create", "dns.changes.get", "dns.resourceRecordSets.create", "dns.resourceRecordSets.delete",
        "dns.resourceRecordSets.list", "dns.resourceRecordSets.update"]
    # A deleted custom role's id stays taken for weeks: each life of the stack has its own.
    assert re.fullmatch(rf"servestack_{plan['stack'].replace('-', '_')}_acme_dns01_[a-z0-9]{{6}}",
                        role["inputs"]["roleId"])
    grants = [(r["type"], r["inputs"]) for t in IAM_TYPES for r in resources(plan, t)
              if r["inputs"]["member"] == member]
    assert grants == [(ZONE_IAM, {"project": project, "managedZone": "servestack-example", "member": member,
                                  "role": f"projects/{project}/roles/{role['inputs']['roleId']}"})]
    binding = inputs(plan, SA_IAM, "servestack-cert-manager-workload-identity")
    assert binding["member"] == workload_identity_member(project, "cert-manager", "cert-manager")
    assert binding["serviceAccountId"] == f"projects/{project}/serviceAccounts/{email}"


def test_cert_manager_solves_dns01_in_cloud_dns_as_its_google_account(plan: dict[str, Any]) -> None:
    release = one(plan, HELM, "servestack-cert-manager")
    values = release["inputs"]["values"]
    assert values["serviceAccount"]["annotations"] == {"iam.gke.io/gcp-service-account": _email(plan, "acme")}
    assert values["podLabels"] == {}
    # The binding and the grant are in place before cert-manager first asks for a certificate.
    for name in ("servestack-cert-manager-workload-identity", "servestack-cert-manager-dns01"):
        assert one(plan, SA_IAM if "identity" in name else ZONE_IAM, name)["urn"] in release["dependencies"]
    issuer = inputs(plan, "kubernetes:cert-manager.io/v1:ClusterIssuer")
    (solver,) = issuer["spec"]["acme"]["solvers"]
    assert solver["dns01"] == {"cloudDNS": {"project": plan["config"]["gcp:project"],
                                            "hostedZoneName": "servestack-example"}}


@pytest.mark.parametrize(("gateway", "problem"), [
    ({"hostname": "api.other.example.org"},
     "servestack:gateway.hostname: 'api.other.example.org' is not inside the DNS zone 'servestack.example.com' that "
     "servestack:gateway.dnsZone ('servestack-example') names"),
    ({"dnsZone": "no-such-zone"},
     "`pulumi up` would fail: invoking gcp:dns/getManagedZone:getManagedZone: Error when reading or editing DNS "
     "Managed Zone \"projects/servestack-dev/managedZones/no-such-zone\": googleapi: Error 404: The "
     "'parameters.managedZone' resource named 'no-such-zone' does not exist., notFound"),
], ids=["hostname-outside-the-zone", "unknown-zone"])
def test_a_hostname_the_zone_cannot_hold_fails_the_plan_by_name(tmp_path: Path, gateway: dict[str, Any],
                                                                 problem: str) -> None:
    config = read_stack_config("gcp-dev")["servestack:gateway"]
    stacks = stack_variant(tmp_path, "gcp-dev", "gcp-zone", **{"servestack:gateway": {**config, **gateway}})
    with pytest.raises(PlanError) as error:
        plan_in_subprocess("gcp-zone", stacks_dir=stacks)
    assert problem in str(error.value)


@pytest.mark.parametrize("stack", STACKS)
def test_kubeconfig_targets_the_right_endpoint_through_the_gcloud_plugin(stack: str) -> None:
    plan = plan_unmasked(stack)
    config = yaml.safe_load(one(plan, "pulumi:providers:kubernetes")["inputs"]["kubeconfig"])
    cluster = one(plan, CLUSTER)
    context = config["contexts"][0]["name"]
    assert context.startswith(f"gke_{plan['config']['gcp:project']}_{cluster['inputs']['location']}_")
    assert config["current-context"] == context
    # The DNS endpoint, with Google's publicly trusted certificate (no CA data), as
    # `gcloud container clusters get-credentials --dns-endpoint` writes it.
    dns = cluster["inputs"]["controlPlaneEndpointsConfig"]["dnsEndpointConfig"]
    assert dns == {"allowExternalTraffic": True}
    assert list(config["clusters"][0]["cluster"]) == ["server"]
    assert re.fullmatch(r"https://gke-[0-9a-f]{32}-[0-9]+\.us-central1\.gke\.goog",
                        config["clusters"][0]["cluster"]["server"])
    exec_ = config["users"][0]["user"]["exec"]
    assert exec_["command"] == "gke-gcloud-auth-plugin"
    # Application Default Credentials: the identity pulumi-gcp itself uses, not whatever gcloud is logged in as.
    assert exec_["args"] == ["--use_application_default_credentials"]
    assert exec_["apiVersion"] == "client.authentication.k8s.io/v1beta1"
    assert exec_["provideClusterInfo"] is True
    assert "token" not in config["users"][0]["user"]


def test_kubeconfig_helper_writes_the_server_and_plugin() -> None:
    text = kubeconfig(["p", "us-central1", "c", "10.0.0.2", "Q0E="])
    config = json.loads(text)
    assert config["clusters"] == [{"name": "gke_p_us-central1_c",
                                   "cluster": {"server": "https://10.0.0.2", "certificate-authority-data": "Q0E="}}]
    assert config["users"][0]["user"]["exec"]["command"] == "gke-gcloud-auth-plugin"


# --- config ----------------------------------------------------------------------------------------


VALID_GCP: dict[str, Any] = {
    "servestack:cloud": "gcp",
    "gcp:project": "servestack-dev",
    "gcp:region": "us-central1",
    "servestack:gpu": {"type": "nvidia-l4", "machineType": "g2-standard-4", "minNodes": 0, "maxNodes": 2},
    "servestack:access": {"endpointCidrs": ["203.0.113.0/24"]},
    "servestack:model": {"name": "tiny", "source": "image", "revision": "r1"},
    "servestack:gateway": {"hostname": "api.servestack.example.com", "dnsZone": "servestack-example",
                           "acmeEmail": "ops@servestack.example.com"},
}


def test_gcp_config_defaults() -> None:
    config = parse_config("gcp-dev", VALID_GCP)
    assert (config.gcp.regional, config.gcp.zones, config.gcp.release_channel) == (False, (), "REGULAR")
    assert (config.gcp.network_cidr, config.gcp.pods_cidr, config.gcp.services_cidr, config.gcp.master_cidr) == (
        "10.10.0.0/20", "10.64.0.0/14", "10.68.0.0/20", "172.16.0.32/28")
    # No zones configured: every zone of the region that offers the GPU.
    assert gpu_zones(config) == GPU_ZONES["us-central1"]["nvidia-l4"]


BAD_GCP_CONFIGS = [
    pytest.param({"releaseChannel": "BETA"},
                 ["servestack:gcp.releaseChannel: 'BETA' is not a GKE release channel; allowed: RAPID, REGULAR, "
                  "STABLE, EXTENDED"], id="release-channel"),
    pytest.param({"masterCidr": "172.16.0.0/24"},
                 ["servestack:gcp.masterCidr: '172.16.0.0/24' must be a private IPv4 range a /28, such as "
                  "172.16.0.32/28"], id="master-not-28"),
    pytest.param({"podsCidr": "8.8.0.0/14"},
                 ["servestack:gcp.podsCidr: '8.8.0.0/14' must be a private IPv4 range between /9 and /21, such as "
                  "10.64.0.0/14"], id="pods-public"),
    pytest.param({"servicesCidr": "10.10.0.0/20"},
                 ["servestack:gcp.servicesCidr: '10.10.0.0/20' overlaps servestack:gcp.networkCidr (10.10.0.0/20); "
                  "the GKE ranges must be disjoint"], id="services-overlap"),
    pytest.param({"zones": ["us-east1-b"]},
                 ["servestack:gcp.zones[0]: 'us-east1-b' is not in the stack's region gcp:region (us-central1)"],
                 id="zone-other-region"),
    pytest.param({"zones": ["central-a", "us-central1-a", "us-central1-a"]},
                 ["servestack:gcp.zones[0]: 'central-a' is not a zone name such as us-central1-a",
                  "servestack:gcp.zones[2]: 'us-central1-a' is listed twice"], id="zone-names"),
    pytest.param({"zones": []},
                 ["servestack:gcp.zones: [] is not a non-empty list of zones such as [\"us-central1-a\"]"],
                 id="zones-empty"),
    pytest.param({"regional": "yes"}, ["servestack:gcp.regional: 'yes' is not true or false"], id="regional"),
    pytest.param({"subnetCidr": "10.0.0.0/20"},
                 ["servestack:gcp.subnetCidr: unknown key; known: deletionProtection, masterCidr, networkCidr, "
                  "podsCidr, regional, releaseChannel, securityGroup, servicesCidr, zones"], id="unknown-key"),
]


@pytest.mark.parametrize(("gcp_values", "problems"), BAD_GCP_CONFIGS)
def test_bad_gcp_config_is_reported_by_key(gcp_values: dict[str, Any], problems: list[str]) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config("gcp-dev", {**VALID_GCP, "servestack:gcp": gcp_values})
    assert error.value.problems == problems


def test_missing_project_is_reported() -> None:
    values = {k: v for k, v in VALID_GCP.items() if k != "gcp:project"}
    with pytest.raises(ConfigError) as error:
        parse_config("gcp-dev", values)
    assert error.value.problems == ["gcp:project: missing; the gcp stacks need a project "
                                    "(pulumi config set gcp:project <project-id>)"]


@pytest.mark.parametrize(("values", "problems"), [
    pytest.param({"servestack:gcp": {"zones": ["us-central1-f"]}},
                 ["servestack:gcp.zones[0]: nvidia-l4 is not offered in 'us-central1-f'; allowed in us-central1: "
                  "us-central1-a, us-central1-b, us-central1-c"], id="zone-without-the-gpu"),
    pytest.param({"gcp:region": "europe-north1"},
                 ["gcp:region: 'europe-north1' offers no nvidia-l4 GPUs known to servestack; allowed for nvidia-l4: "
                  "asia-southeast1, europe-west1, europe-west4, us-central1, us-east1, us-east4, us-west1, "
                  "us-west4"], id="region-without-the-gpu"),
    pytest.param({"servestack:gpu": {"type": "nvidia-a100-80gb", "minNodes": 0, "maxNodes": 2},
                  "gcp:region": "us-west4"},
                 ["gcp:region: 'us-west4' offers no nvidia-a100-80gb GPUs known to servestack; allowed for "
                  "nvidia-a100-80gb: asia-southeast1, europe-west4, us-central1, us-east4"],
                 id="a100-80gb-region"),
])
def test_gpu_zones_are_checked_against_where_the_gpu_is_offered(values: dict[str, Any], problems: list[str]) -> None:
    config = parse_config("gcp-dev", {**VALID_GCP, **values})
    with pytest.raises(ConfigError) as error:
        gpu_zones(config)
    assert error.value.problems == problems


def test_configured_zones_are_kept_in_order() -> None:
    config = parse_config("gcp-dev", {**VALID_GCP, "servestack:gcp": {"zones": ["us-central1-c", "us-central1-a"]}})
    assert gpu_zones(config) == ("us-central1-c", "us-central1-a")


def test_machine_families_match_their_gpus() -> None:
    for gpu, family in (("nvidia-l4", "g2-standard-4"), ("nvidia-tesla-a100", "a2-highgpu-1g"),
                        ("nvidia-a100-80gb", "a2-ultragpu-1g")):
        config = parse_config("gcp-dev", {**VALID_GCP, "servestack:gpu": {"type": gpu, "machineType": family,
                                                                          "minNodes": 0, "maxNodes": 2}})
        assert gpu_zones(config) == GPU_ZONES["us-central1"][gpu]
