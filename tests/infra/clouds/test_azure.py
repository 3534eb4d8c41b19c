"""The Azure stacks' offline plans: network, NSG, AKS, node pools, registry, storage, identity, serving."""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pulumi.runtime.mocks import MockCallArgs, MockResourceArgs

from infra.clouds import azure
from infra.config import ConfigError, parse_config
from servestack.offline.fakes import FakeContext
from servestack.offline.fakes import azure as fakes
from servestack.offline.plan import STACKS_DIR, PlanError, plan_in_subprocess, read_stack_config
from servestack.offline.schemas import validate_plan
from serving.fetch import parse_source
from serving.settings import Settings
from tests.infra.plans import inputs, one, resources, stack_variant

STACKS = ("azure-dev", "azure-prod")
RG = "azure-native:resources:ResourceGroup"
VNET = "azure-native:network:VirtualNetwork"
SUBNET = "azure-native:network:Subnet"
NSG = "azure-native:network:NetworkSecurityGroup"
SECURITY_RULE = "azure-native:network:SecurityRule"
PUBLIC_IP = "azure-native:network:PublicIPAddress"
NAT = "azure-native:network:NatGateway"
FLOW_LOG = "azure-native:network:FlowLog"
CLUSTER = "azure-native:containerservice:ManagedCluster"
POOL = "azure-native:containerservice:AgentPool"
REGISTRY = "azure-native:containerregistry:Registry"
ACCOUNT = "azure-native:storage:StorageAccount"
CONTAINER = "azure-native:storage:BlobContainer"
IDENTITY = "azure-native:managedidentity:UserAssignedIdentity"
FEDERATION = "azure-native:managedidentity:FederatedIdentityCredential"
ROLE = "azure-native:authorization:RoleAssignment"
ROLE_DEFINITION = "azure-native:authorization:RoleDefinition"
RECORD = "azure-native:dns:RecordSet"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
ENVOY_PROXY = "kubernetes:gateway.envoyproxy.io/v1alpha1:EnvoyProxy"
HELM = "kubernetes:helm.sh/v3:Release"
WORLD = {"*", "internet", "any", "0.0.0.0/0", "::/0"}
SUBSCRIPTION = f"/subscriptions/{fakes.SUBSCRIPTION_ID}"
# The stacks' DNS zone, in a subscription of its own.
DNS_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
DNS_GROUP = f"/subscriptions/{DNS_SUBSCRIPTION}/resourceGroups/dns"
DNS_ZONE = f"{DNS_GROUP}/providers/Microsoft.Network/dnszones/servestack.example.com"

# Every Azure resource each plan declares, by type: with cert-manager's identity, its federation, its custom role
# and grant on the zone, and the hostname's record.
DEV_INVENTORY = {RG: 1, VNET: 1, SUBNET: 1, NSG: 1, PUBLIC_IP: 1, NAT: 1, CLUSTER: 1, POOL: 1, REGISTRY: 1,
                 ACCOUNT: 1, CONTAINER: 1, IDENTITY: 3, FEDERATION: 2, ROLE: 6, ROLE_DEFINITION: 1, RECORD: 1}
# Prod has monitoring: Container Insights' workspace, data collection rule and its association with the cluster;
# and lets its two on-call groups fetch a kubeconfig (tests/infra/test_operators.py).
PROD_INVENTORY = {**DEV_INVENTORY, FLOW_LOG: 1, ACCOUNT: 2, IDENTITY: 4, ROLE: 9,
                  "azure-native:operationalinsights:Workspace": 1, "azure-native:monitor:DataCollectionRule": 1,
                  "azure-native:monitor:DataCollectionRuleAssociation": 1}


@pytest.fixture(scope="module")
def dev(stack_plan: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    return stack_plan("azure-dev")


@pytest.fixture(scope="module")
def prod(stack_plan: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    return stack_plan("azure-prod")


@pytest.fixture(scope="module", params=STACKS)
def plan(request: pytest.FixtureRequest, stack_plan: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    return stack_plan(request.param)


def _config(plan: dict[str, Any]) -> Any:
    return parse_config(plan["stack"], read_stack_config(plan["stack"]))


def _rg(plan: dict[str, Any]) -> str:
    return f"{SUBSCRIPTION}/resourceGroups/servestack-{plan['stack']}-rg"


def _role(role: str) -> str:
    return f"{SUBSCRIPTION}/providers/Microsoft.Authorization/roleDefinitions/{role}"


# --- inventory and network ------------------------------------------------------------------------


@pytest.mark.parametrize(("stack", "expected"), [("azure-dev", DEV_INVENTORY), ("azure-prod", PROD_INVENTORY)])
def test_each_stack_declares_exactly_its_azure_resources(
        stack: str, expected: dict[str, int], stack_plan: Callable[[str], dict[str, Any]]) -> None:
    plan = stack_plan(stack)
    found: dict[str, int] = {}
    for r in plan["resources"]:
        if r["type"].startswith("azure-native:"):
            found[r["type"]] = found.get(r["type"], 0) + 1
    assert found == expected
    # All under the cluster's component but the hostname's record, which the gateway makes for its address.
    component = one(plan, "servestack:azure:GpuCluster")
    assert all(r["parent"] == component["urn"] for r in plan["resources"]
               if r["type"].startswith("azure-native:") and r["type"] != RECORD)
    assert one(plan, RECORD)["parent"] == one(plan, "servestack:kubernetes:EntryGateway")["urn"]


def test_network_is_a_vnet_with_a_node_subnet_behind_the_nsg_and_nat(plan: dict[str, Any]) -> None:
    config = _config(plan)
    prefix = f"servestack-{plan['stack']}"
    assert inputs(plan, RG) == {"resourceGroupName": f"{prefix}-rg", "location": "eastus"}
    assert inputs(plan, VNET)["addressSpace"] == {"addressPrefixes": [config.azure.vnet_cidr]}

    subnet = inputs(plan, SUBNET)
    assert subnet["subnetName"] == "nodes"
    nodes = ipaddress.IPv4Network(subnet["addressPrefix"])
    assert nodes.subnet_of(ipaddress.IPv4Network(config.azure.vnet_cidr))
    assert nodes.prefixlen == 18
    net = f"{_rg(plan)}/providers/Microsoft.Network"
    assert subnet["networkSecurityGroup"] == {"id": f"{net}/networkSecurityGroups/{prefix}-nodes-nsg"}
    assert subnet["natGateway"] == {"id": f"{net}/natGateways/{prefix}-nat"}
    assert subnet["defaultOutboundAccess"] is False
    assert subnet["serviceEndpoints"] == [{"service": "Microsoft.Storage"}]

    egress = inputs(plan, PUBLIC_IP)
    assert (egress["sku"]["name"], egress["publicIPAllocationMethod"]) == ("Standard", "Static")
    nat = inputs(plan, NAT)
    assert nat["sku"] == {"name": "Standard"}
    assert nat["publicIpAddresses"] == [{"id": f"{net}/publicIPAddresses/{prefix}-egress-ip"}]


def test_prod_writes_vnet_flow_logs_and_dev_does_not(dev: dict[str, Any], prod: dict[str, Any]) -> None:
    assert resources(dev, FLOW_LOG) == []
    flow = inputs(prod, FLOW_LOG)
    net = f"{_rg(prod)}/providers"
    assert flow["targetResourceId"] == f"{net}/Microsoft.Network/virtualNetworks/servestack-azure-prod-vnet"
    logs = inputs(prod, ACCOUNT, "servestack-flow-logs")
    assert flow["storageId"] == f"{net}/Microsoft.Storage/storageAccounts/{logs['accountName']}"
    assert (flow["networkWatcherName"], flow["resourceGroupName"]) == ("NetworkWatcher_eastus", "NetworkWatcherRG")
    assert flow["enabled"] is True
    assert flow["retentionPolicy"] == {"enabled": True, "days": 30.0}
    writer = f"{net}/Microsoft.ManagedIdentity/userAssignedIdentities/servestack-azure-prod-flow-logs"
    assert flow["identity"] == {"type": "UserAssigned", "userAssignedIdentities": [writer]}
    assert logs["allowSharedKeyAccess"] is False


# --- NSG ------------------------------------------------------------------------------------------


def _admits_world(rule: dict[str, Any]) -> bool:
    sources = [rule.get("sourceAddressPrefix"), *(rule.get("sourceAddressPrefixes") or [])]
    return rule["access"] == "Allow" and any(str(s).lower() in WORLD for s in sources if s is not None)


def test_nsg_rules_are_inline_explicit_and_ordered(plan: dict[str, Any]) -> None:
    assert resources(plan, SECURITY_RULE) == []
    rules = {r["name"]: r for r in inputs(plan, NSG)["securityRules"]}
    assert {n: r["priority"] for n, r in rules.items()} == {
        "allow-serving-load-balancer": 100.0, "allow-azure-load-balancer-probes": 110.0,
        "allow-intra-vnet": 120.0, "deny-internet-inbound": 4096.0}
    assert all(r["description"] and r["direction"] == "Inbound" for r in rules.values())
    vnet = _config(plan).azure.vnet_cidr

    serving = rules["allow-serving-load-balancer"]
    # The gateway's listeners: floating IP delivers to whichever node runs the Envoy pods, on the entry's ports.
    assert (serving["access"], serving["protocol"], serving["destinationPortRanges"],
            serving["destinationAddressPrefix"]) == ("Allow", "Tcp", ["80", "443"], "*")
    assert serving["sourceAddressPrefixes"] == ["198.51.100.0/24"]
    probes = rules["allow-azure-load-balancer-probes"]
    assert (probes["sourceAddressPrefix"], probes["destinationAddressPrefix"]) == ("AzureLoadBalancer", vnet)
    intra = rules["allow-intra-vnet"]
    assert intra["sourceAddressPrefixes"] == intra["destinationAddressPrefixes"] == [vnet, "10.244.0.0/16"]
    deny = rules["deny-internet-inbound"]
    assert (deny["access"], deny["sourceAddressPrefix"], deny["destinationPortRange"]) == ("Deny", "Internet", "*")
    assert max(r["priority"] for r in rules.values()) == deny["priority"]


def test_no_nsg_rule_admits_the_world(plan: dict[str, Any]) -> None:
    assert [r["name"] for r in inputs(plan, NSG)["securityRules"] if _admits_world(r)] == []


def test_the_clients_reach_only_the_load_balancer_port() -> None:
    values = read_stack_config("azure-dev")
    values["servestack:access"] = {**values["servestack:access"],
                                   "endpointCidrs": ["198.51.100.0/24", "192.0.2.0/24", "2001:db8::/32"]}
    rules = azure.nsg_rules(parse_config("azure-dev", values))
    clients = [r for r in rules if r.source_address_prefixes and "198.51.100.0/24" in r.source_address_prefixes]
    assert [(r.name, r.protocol, r.destination_port_ranges) for r in clients] == [
        ("allow-serving-load-balancer", "Tcp", ["80", "443"])]
    # The load balancer is IPv4 only: an IPv6 range has nothing to reach.
    assert clients[0].source_address_prefixes == ["198.51.100.0/24", "192.0.2.0/24"]


def test_internal_only_endpoint_has_no_load_balancer_rule() -> None:
    values = read_stack_config("azure-dev")
    values["servestack:access"] = {"apiCidrs": ["203.0.113.0/24"], "internalLoadBalancer": True}
    names = [r.name for r in azure.nsg_rules(parse_config("azure-dev", values))]
    assert names == ["allow-azure-load-balancer-probes", "allow-intra-vnet", "deny-internet-inbound"]


# --- AKS ------------------------------------------------------------------------------------------


def test_cluster_is_entra_only_overlay_with_workload_identity(plan: dict[str, Any]) -> None:
    cluster = inputs(plan, CLUSTER)
    assert cluster["kubernetesVersion"] == "1.35"
    assert cluster["networkProfile"] == {
        "networkPlugin": "azure", "networkPluginMode": "overlay", "networkDataplane": "cilium",
        "networkPolicy": "cilium", "podCidr": "10.244.0.0/16", "serviceCidr": "10.0.0.0/16",
        "dnsServiceIP": "10.0.0.10", "outboundType": "userAssignedNATGateway", "loadBalancerSku": "standard"}
    identity = (f"{_rg(plan)}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/"
                f"servestack-{plan['stack']}-cluster")
    assert cluster["identity"] == {"type": "UserAssigned", "userAssignedIdentities": [identity]}
    assert cluster["disableLocalAccounts"] is True
    assert cluster["enableRBAC"] is True
    assert cluster["aadProfile"] == {"managed": True, "enableAzureRBAC": True, "tenantID": fakes.TENANT_ID}
    assert cluster["oidcIssuerProfile"] == {"enabled": True}
    assert cluster["securityProfile"]["workloadIdentity"] == {"enabled": True}
    assert cluster["autoUpgradeProfile"] == {"upgradeChannel": "patch", "nodeOSUpgradeChannel": "NodeImage"}


def test_api_admits_only_the_deployer_the_operators_and_its_nodes(plan: dict[str, Any]) -> None:
    egress = one(plan, PUBLIC_IP)
    _, outputs = fakes.RESOURCES[PUBLIC_IP](
        MockResourceArgs(PUBLIC_IP, egress["name"], egress["inputs"], "", "", True),
        FakeContext(plan["stack"], plan["config"]))
    assert inputs(plan, CLUSTER)["apiServerAccessProfile"] == {
        "authorizedIPRanges": ["203.0.113.0/24", f"{outputs['ipAddress']}/32"]}


def test_system_pool_is_tainted_for_critical_addons(plan: dict[str, Any]) -> None:
    (system,) = inputs(plan, CLUSTER)["agentPoolProfiles"]
    assert (system["name"], system["mode"], system["vmSize"]) == ("system", "System", "Standard_D4ds_v5")
    assert system["nodeTaints"] == ["CriticalAddonsOnly=true:NoSchedule"]
    assert system["enableAutoScaling"] is True
    assert system["vnetSubnetID"].endswith(f"/virtualNetworks/servestack-{plan['stack']}-vnet/subnets/nodes")


def test_no_node_has_a_public_ip(plan: dict[str, Any]) -> None:
    pools = [*inputs(plan, CLUSTER)["agentPoolProfiles"], *(r["inputs"] for r in resources(plan, POOL))]
    assert [p.get("enableNodePublicIP") for p in pools] == [False] * len(pools)
    assert all("nodePublicIPPrefixID" not in p for p in pools)
    # The only public address is the NAT gateway's egress IP.
    assert [r["name"] for r in resources(plan, PUBLIC_IP)] == ["servestack-egress-ip"]


def test_dev_gpu_pool_is_spot_t4_scaling_from_zero(dev: dict[str, Any]) -> None:
    pool = inputs(dev, POOL)
    assert pool["vmSize"] == "Standard_NC4as_T4_v3"
    assert (pool["mode"], pool["enableAutoScaling"], pool["minCount"], pool["maxCount"], pool["count"]) == (
        "User", True, 0.0, 2.0, 0.0)
    assert (pool["scaleSetPriority"], pool["scaleSetEvictionPolicy"], pool["spotMaxPrice"]) == ("Spot", "Delete", -1.0)
    assert pool["nodeTaints"] == ["nvidia.com/gpu=present:NoSchedule",
                                  "kubernetes.azure.com/scalesetpriority=spot:NoSchedule"]
    # The spot label AKS puts on the pool is declared with ours: a refresh brings back nothing new.
    assert pool["nodeLabels"] == {"servestack.io/pool": "gpu", "servestack.io/gpu-type": "nvidia-t4",
                                  "kubernetes.azure.com/scalesetpriority": "spot"}
    assert "drift" not in one(dev, POOL)
    assert pool["gpuProfile"] == {"driver": "Install"}
    assert pool["resourceName"] == "servestack-azure-dev-aks"
    assert pool["osDiskSizeGB"] == 128.0


def test_a_rolling_update_at_full_scale_finds_a_gpu_node(plan: dict[str, Any]) -> None:
    """At maxReplicas the rollout's surge pod (maxSurge 1, maxUnavailable 0) needs one more GPU node than the
    replicas hold; without it the rollout waits forever and `pulumi up` times out."""
    pool = inputs(plan, POOL)
    # KEDA's ScaledObject with monitoring (prod), else an HPA on CPU.
    scaled = resources(plan, "kubernetes:keda.sh/v1alpha1:ScaledObject")
    max_replicas = scaled[0]["inputs"]["spec"]["maxReplicaCount"] if scaled else \
        inputs(plan, "kubernetes:autoscaling/v2:HorizontalPodAutoscaler")["spec"]["maxReplicas"]
    rollout = inputs(plan, DEPLOYMENT, "servestack-deployment")["spec"]["strategy"]["rollingUpdate"]
    gpus_per_pod = float(_pod(plan)["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
    assert gpus_per_pod == 1.0  # one pod per node on these one-GPU machines
    assert pool["maxCount"] >= max_replicas + rollout["maxSurge"]


def test_the_cluster_autoscaler_owns_the_node_counts(plan: dict[str, Any]) -> None:
    assert one(plan, POOL)["ignoreChanges"] == ["count"]
    assert one(plan, CLUSTER)["ignoreChanges"] == ["agentPoolProfiles[0].count"]


def test_gpu_upgrades_replace_a_node_in_place_and_prod_system_nodes_span_zones(plan: dict[str, Any]) -> None:
    # No surge node: no GPU quota or cost beyond maxNodes during an upgrade; the PDB allows one pod down.
    assert inputs(plan, POOL)["upgradeSettings"] == {"maxSurge": "0", "maxUnavailable": "1"}
    (system,) = inputs(plan, CLUSTER)["agentPoolProfiles"]
    assert system.get("availabilityZones") == (["1", "2", "3"] if plan["stack"] == "azure-prod" else None)


def test_prod_gpu_pool_is_on_demand_a100_one_to_eight(prod: dict[str, Any]) -> None:
    pool = inputs(prod, POOL)
    assert pool["vmSize"] == "Standard_NC24ads_A100_v4"
    assert (pool["minCount"], pool["maxCount"], pool["scaleSetPriority"]) == (1.0, 8.0, "Regular")
    assert "spotMaxPrice" not in pool and "scaleSetEvictionPolicy" not in pool
    assert pool["nodeTaints"] == ["nvidia.com/gpu=present:NoSchedule"]
    assert pool["gpuProfile"] == {"driver": "Install"}


# --- registry, storage, identity ------------------------------------------------------------------


def test_registry_has_no_admin_user_and_the_kubelet_pulls(plan: dict[str, Any]) -> None:
    registry = inputs(plan, REGISTRY)
    assert registry["adminUserEnabled"] is False
    assert registry["anonymousPullEnabled"] is False
    pull = inputs(plan, ROLE, "servestack-kubelet-acr-pull")
    assert pull["roleDefinitionId"] == _role(azure.ACR_PULL)
    assert pull["scope"] == f"{_rg(plan)}/providers/Microsoft.ContainerRegistry/registries/{registry['registryName']}"
    # The kubelet identity the cluster reports (as the offline fakes derive it).
    ctx = FakeContext(plan["stack"], plan["config"])
    kubelet = fakes._guid(ctx, "principal", f"servestack-{plan['stack']}-aks-agentpool")
    assert (pull["principalId"], pull["principalType"]) == (kubelet, "ServicePrincipal")


def test_model_storage_is_entra_only_https_and_firewalled(plan: dict[str, Any]) -> None:
    account = inputs(plan, ACCOUNT, "servestack-models")
    assert account["kind"] == "StorageV2"
    assert account["enableHttpsTrafficOnly"] is True
    assert account["minimumTlsVersion"] == "TLS1_2"
    assert account["allowBlobPublicAccess"] is False
    assert account["allowSharedKeyAccess"] is False
    rules = account["networkRuleSet"]
    assert (rules["defaultAction"], rules["bypass"]) == ("Deny", "AzureServices")
    subnet = f"{_rg(plan)}/providers/Microsoft.Network/virtualNetworks/servestack-{plan['stack']}-vnet/subnets/nodes"
    assert rules["virtualNetworkRules"] == [{"virtualNetworkResourceId": subnet, "action": "Allow"}]
    assert rules["ipRules"] == [{"iPAddressOrRange": "203.0.113.0/24", "action": "Allow"}]
    container = inputs(plan, CONTAINER)
    assert (container["containerName"], container["publicAccess"], container["accountName"]) == (
        "models", "None", account["accountName"])


def test_serving_identity_is_federated_with_exactly_the_service_account(plan: dict[str, Any]) -> None:
    identity = inputs(plan, IDENTITY, "servestack-serving-identity")
    federation = inputs(plan, FEDERATION, "servestack-serving-federation")
    assert federation["subject"] == "system:serviceaccount:servestack:servestack"
    assert federation["audiences"] == ["api://AzureADTokenExchange"]
    assert federation["resourceName"] == identity["resourceName"]
    assert federation["issuer"].startswith("https://eastus.oic.prod-aks.azure.com/")


def test_kubernetes_objects_wait_for_everything_the_pods_need(plan: dict[str, Any]) -> None:
    """The init container fetches the model as the serving identity on the pod's first start: the namespace
    (and so every Kubernetes object) waits for the federation and the grant, as for the GPU pool, the
    deployer's cluster access and the kubelet's pull grant."""
    waits_for = set(one(plan, "kubernetes:core/v1:Namespace", "servestack-namespace")["dependencies"])
    access_wait = one(plan, "command:local:Command", "servestack-deployer-access-wait")
    needed = {one(plan, FEDERATION, "servestack-serving-federation")["urn"], one(plan, POOL)["urn"],
              access_wait["urn"]} | {
        one(plan, ROLE, name)["urn"] for name in ("servestack-serving-model-reader", "servestack-kubelet-acr-pull")}
    assert needed <= waits_for
    # The deployer's grant reaches the API server minutes after it exists: the wait polls for it.
    assert one(plan, ROLE, "servestack-deployer-cluster-admin")["urn"] in access_wait["dependencies"]
    # The device plugin lives in kube-system, outside the namespace: it waits by itself. Without the
    # deployer's role assignment the API server answers 403 (local accounts are off).
    assert needed <= set(one(plan, "kubernetes:apps/v1:DaemonSet")["dependencies"])


def test_role_assignments_are_scoped_to_single_resources(plan: dict[str, Any]) -> None:
    account = inputs(plan, ACCOUNT, "servestack-models")["accountName"]
    stack = plan["stack"]
    providers = f"{_rg(plan)}/providers"
    registry = inputs(plan, REGISTRY)["registryName"]
    expected = {
        "servestack-cluster-subnet-access": (
            azure.NETWORK_CONTRIBUTOR,
            f"{providers}/Microsoft.Network/virtualNetworks/servestack-{stack}-vnet/subnets/nodes"),
        "servestack-deployer-cluster-admin": (
            azure.AKS_RBAC_CLUSTER_ADMIN,
            f"{providers}/Microsoft.ContainerService/managedClusters/servestack-{stack}-aks"),
        "servestack-kubelet-acr-pull": (
            azure.ACR_PULL, f"{providers}/Microsoft.ContainerRegistry/registries/{registry}"),
        "servestack-serving-model-reader": (
            azure.STORAGE_BLOB_DATA_READER,
            f"{providers}/Microsoft.Storage/storageAccounts/{account}/blobServices/default/containers/models"),
        "servestack-deployer-model-uploads": (
            azure.STORAGE_BLOB_DATA_CONTRIBUTOR,
            f"{providers}/Microsoft.Storage/storageAccounts/{account}/blobServices/default/containers/models"),
    }
    if stack == "azure-prod":
        logs = inputs(plan, ACCOUNT, "servestack-flow-logs")["accountName"]
        expected["servestack-flow-logs-writer"] = (
            azure.STORAGE_BLOB_DATA_CONTRIBUTOR, f"{providers}/Microsoft.Storage/storageAccounts/{logs}")
        access = _config(plan).access
        for group in access.viewer_groups + access.operator_groups:
            expected[f"servestack-on-call-{group}"] = (
                azure.AKS_CLUSTER_USER, expected["servestack-deployer-cluster-admin"][1])
    found = {r["name"]: (r["inputs"]["roleDefinitionId"], r["inputs"]["scope"]) for r in resources(plan, ROLE)}
    # cert-manager's custom role, on the one DNS zone (in the zone's own subscription).
    custom = f"/subscriptions/{DNS_SUBSCRIPTION}/providers/Microsoft.Authorization/roleDefinitions/" + \
        fakes._guid(FakeContext(stack, plan["config"]), "role-definition", "servestack-acme-dns01-role")
    assert found == {**{n: (_role(role), scope) for n, (role, scope) in expected.items()},
                     "servestack-cert-manager-dns01": (custom, DNS_ZONE)}
    # The fake deployer signed in with the Azure CLI: a user.
    for name in ("servestack-deployer-cluster-admin", "servestack-deployer-model-uploads"):
        grant = inputs(plan, ROLE, name)
        assert (grant["principalId"], grant["principalType"]) == (fakes.DEPLOYER_OBJECT_ID, "User")


@pytest.mark.parametrize(("client_id", "principal"), [
    ("04b07795-8ddb-461a-bbee-02f9e1bf7b46", "User"),  # Azure CLI
    ("1950A258-227B-4E31-A9CF-717495945FC2", "User"),  # Azure PowerShell, in capitals
    ("3f1c9a52-5a0c-4e4f-9a49-9d4b2a2e6f10", "ServicePrincipal"),  # an application's own id (CI, MSI)
])
def test_the_deployers_principal_type_follows_its_sign_in(client_id: str, principal: str) -> None:
    assert azure.principal_type(client_id) == principal


# --- Kubernetes access and the serving deployment -------------------------------------------------


def test_kubeconfig_is_a_secret_that_logs_in_through_kubelogin(plan: dict[str, Any]) -> None:
    assert inputs(plan, "pulumi:providers:kubernetes", "servestack-k8s") == {"kubeconfig": "[secret]"}
    k8s_objects = [r for r in plan["resources"] if r["type"].startswith("kubernetes:")]
    assert k8s_objects and all(r["provider"].endswith("::servestack-k8s") for r in k8s_objects)


@pytest.mark.parametrize(("login", "extra"), [
    ("azurecli", []), ("workloadidentity", []),
    # The service principal or managed identity pulumi-azure-native signs in with, from the same ARM_* variables.
    ("spn", ["--use-azurerm-env-vars"]), ("msi", ["--use-azurerm-env-vars"])])
def test_kubeconfig_keeps_the_cluster_and_logs_in_as_the_deployer(login: str, extra: list[str]) -> None:
    ctx = FakeContext("azure-dev", {"azure-native:location": "eastus"}, memory={"aks_servers": {"aks": "aks.example"}})
    creds = fakes._user_credentials(
        MockCallArgs(token="", args={"resourceName": "aks", "resourceGroupName": "rg"}, provider=""), ctx)

    class Credential:
        value = creds["kubeconfigs"][0]["value"]

    original = yaml.safe_load(base64.b64decode(Credential.value))
    config = yaml.safe_load(azure.kubelogin_kubeconfig([Credential()], login))
    assert config["clusters"] == original["clusters"]
    assert config["current-context"] == "aks"
    (user,) = config["users"]
    assert user["user"]["exec"]["command"] == "kubelogin"
    assert user["user"]["exec"]["args"] == [
        "get-token", "--login", login, "--server-id", "6dae42f8-4368-4678-94ff-3960e28e3630", *extra]
    assert user["user"]["exec"]["interactiveMode"] == "Never"
    with pytest.raises(ValueError, match="no user kubeconfig"):
        azure.kubelogin_kubeconfig([], login)


def _pod(plan: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = inputs(plan, DEPLOYMENT, "servestack-deployment")["spec"]["template"]
    return spec


def _envoy_service(plan: dict[str, Any]) -> dict[str, Any]:
    """The gateway's load balancer Service, as the EnvoyProxy describes it to Envoy Gateway."""
    service: dict[str, Any] = inputs(plan, ENVOY_PROXY)["spec"]["provider"]["kubernetes"]["envoyService"]
    return service


def test_serving_pods_use_workload_identity_and_the_gpu_pool(plan: dict[str, Any]) -> None:
    client_id = fakes._guid(FakeContext(plan["stack"], plan["config"]), "client", f"servestack-{plan['stack']}-serving")
    account = inputs(plan, "kubernetes:core/v1:ServiceAccount", "servestack-service-account")["metadata"]
    assert account["name"] == "servestack" and account["namespace"] == "servestack"
    assert account["annotations"] == {"azure.workload.identity/client-id": client_id}
    pod = _pod(plan)
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    spec = pod["spec"]
    assert spec["nodeSelector"] == {"servestack.io/pool": "gpu"}
    tolerations = [(t["key"], t.get("value"), t["effect"]) for t in spec["tolerations"]]
    gpu = ("nvidia.com/gpu", "present", "NoSchedule")
    spot = ("kubernetes.azure.com/scalesetpriority", "spot", "NoSchedule")
    assert tolerations == ([gpu, spot] if plan["stack"] == "azure-dev" else [gpu])
    registry = inputs(plan, REGISTRY)["registryName"]
    assert spec["containers"][0]["image"] == f"{registry}.azurecr.io/servestack-serving:0.1.0"
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["SERVESTACK_REQUIRE_CUDA"] == "1"  # no silent CPU fallback on a GPU node


def test_load_balancer_keeps_a_silent_request_open_until_the_server_times_it_out(plan: dict[str, Any]) -> None:
    """Azure's default idle timeout (4 minutes) would reset a non-streaming request before the server's
    own timeout answers it with a 504."""
    annotations = _envoy_service(plan)["annotations"]
    idle_minutes = int(annotations["service.beta.kubernetes.io/azure-load-balancer-tcp-idle-timeout"])
    server_timeout = Settings.model_fields["request_timeout_seconds"].default
    env = {e["name"] for e in _pod(plan)["spec"]["containers"][0]["env"]}
    assert "SERVESTACK_REQUEST_TIMEOUT_SECONDS" not in env  # the server's default applies
    assert 4 <= idle_minutes <= 100 and idle_minutes * 60 > server_timeout


def test_device_plugin_runs_on_gpu_nodes_including_spot(plan: dict[str, Any]) -> None:
    plugin = inputs(plan, "kubernetes:apps/v1:DaemonSet")["spec"]["template"]["spec"]
    assert plugin["nodeSelector"] == {"servestack.io/pool": "gpu"}
    keys = [t["key"] for t in plugin["tolerations"]]
    assert keys == (["nvidia.com/gpu", "kubernetes.azure.com/scalesetpriority"] if plan["stack"] == "azure-dev"
                    else ["nvidia.com/gpu"])


def test_prod_fetches_the_model_from_its_container_in_a_form_fetch_accepts(prod: dict[str, Any]) -> None:
    (init,) = _pod(prod)["spec"]["initContainers"]
    source = init["command"][3]
    account = inputs(prod, ACCOUNT, "servestack-models")["accountName"]
    assert source == f"abfs://models@{account}.blob.core.windows.net/models/tiny/r1"
    parsed = parse_source(source)
    assert (parsed.protocol, parsed.account, parsed.root) == ("az", account, "models/models/tiny/r1")
    # `up` waits until the revision's manifest (uploaded last) is in the container.
    check = inputs(prod, "command:local:Command", "servestack-wait-for-model")["create"]
    assert f"az storage blob exists --account-name {account} --container-name models --auth-mode login " \
           "--name models/tiny/r1/manifest.json" in check


def test_kubernetes_objects_validate(plan: dict[str, Any]) -> None:
    results = validate_plan(plan, "1.35")
    assert {"ClusterIssuer", "Certificate", "EnvoyProxy", "Gateway", "Deployment"} <= {
        r.kind for r in results if not r.skipped}
    assert [(r.kind, r.error) for r in results if r.error] == []


def test_internal_load_balancer_takes_a_node_subnet_address_and_admits_the_vnet(tmp_path: Path) -> None:
    document = yaml.safe_load((STACKS_DIR / "Pulumi.azure-dev.yaml").read_text())
    document["config"]["servestack:access"] = {"internalLoadBalancer": True, "apiCidrs": ["203.0.113.0/24"]}
    (tmp_path / "Pulumi.azure-dev.yaml").write_text(yaml.safe_dump(document))
    plan = plan_in_subprocess("azure-dev", stacks_dir=tmp_path)
    service = _envoy_service(plan)
    assert service["annotations"] == {
        "service.beta.kubernetes.io/azure-load-balancer-tcp-idle-timeout": "10",
        "service.beta.kubernetes.io/azure-load-balancer-internal": "true",
        "service.beta.kubernetes.io/azure-load-balancer-internal-subnet": "nodes"}
    assert inputs(plan, SUBNET)["subnetName"] == "nodes"
    assert "loadBalancerSourceRanges" not in service
    # An address in the VNet, which the hostname's A record names.
    assert plan["outputs"]["address"].startswith("10.")
    assert inputs(plan, RECORD)["aRecords"] == [{"ipv4Address": plan["outputs"]["address"]}]
    assert "allow-serving-load-balancer" not in {r["name"] for r in inputs(plan, NSG)["securityRules"]}


# --- the gateway's hostname and certificate -------------------------------------------------------


def test_the_gateway_and_cert_manager_run_on_the_system_pool(plan: dict[str, Any]) -> None:
    """AKS labels every node of a System pool `kubernetes.azure.com/mode: system`; the pool's taint keeps all but
    critical add-ons off, so the gateway and cert-manager tolerate it."""
    system, toleration = {"kubernetes.azure.com/mode": "system"}, {
        "key": "CriticalAddonsOnly", "operator": "Exists", "effect": "NoSchedule"}
    pod = inputs(plan, ENVOY_PROXY)["spec"]["provider"]["kubernetes"]["envoyDeployment"]["pod"]
    assert (pod["nodeSelector"], pod["tolerations"]) == (system, [toleration])
    values = inputs(plan, HELM, "servestack-cert-manager")["values"]
    for part in (values, values["webhook"], values["cainjector"], values["startupapicheck"]):
        assert (part["nodeSelector"], part["tolerations"]) == (system, [toleration])
    gateway = inputs(plan, HELM, "servestack-envoy-gateway")["values"]["deployment"]["pod"]
    assert (gateway["nodeSelector"], gateway["tolerations"]) == (system, [toleration])
    (pool,) = inputs(plan, CLUSTER)["agentPoolProfiles"]
    assert (pool["mode"], pool["nodeTaints"]) == ("System", ["CriticalAddonsOnly=true:NoSchedule"])


def test_cert_manager_may_change_only_txt_record_sets_of_the_zone(plan: dict[str, Any]) -> None:
    """A custom role (DNS Zone Contributor would also let it change every record and the zone itself), defined on
    the zone's resource group (custom roles are assignable no lower) and assigned on the zone alone."""
    role = inputs(plan, ROLE_DEFINITION)
    assert role["scope"] == DNS_GROUP and role["assignableScopes"] == [DNS_GROUP]
    assert role["permissions"] == [{"actions": ["Microsoft.Network/dnszones/TXT/read",
                                                "Microsoft.Network/dnszones/TXT/write",
                                                "Microsoft.Network/dnszones/TXT/delete"]}]
    # Role names are unique in the tenant: each stack and life has its own.
    assert re.fullmatch(rf"servestack ACME DNS-01 \(servestack-{plan['stack']}-[a-z0-9]{{8}}\)", role["roleName"])
    grant = inputs(plan, ROLE, "servestack-cert-manager-dns01")
    ctx = FakeContext(plan["stack"], plan["config"])
    identity = inputs(plan, IDENTITY, "servestack-cert-manager-identity")
    assert identity["resourceName"] == f"servestack-{plan['stack']}-cert-manager"
    assert (grant["principalId"], grant["principalType"], grant["scope"]) == (
        fakes._guid(ctx, "principal", identity["resourceName"]), "ServicePrincipal", DNS_ZONE)
    federation = inputs(plan, FEDERATION, "servestack-cert-manager-federation")
    assert federation["subject"] == "system:serviceaccount:cert-manager:cert-manager"
    assert federation["resourceName"] == identity["resourceName"]
    assert federation["audiences"] == ["api://AzureADTokenExchange"]


def test_cert_manager_solves_dns01_in_azure_dns_as_its_identity(plan: dict[str, Any]) -> None:
    client_id = fakes._guid(FakeContext(plan["stack"], plan["config"]), "client",
                            f"servestack-{plan['stack']}-cert-manager")
    release = one(plan, HELM, "servestack-cert-manager")
    values = release["inputs"]["values"]
    assert values["serviceAccount"]["annotations"] == {"azure.workload.identity/client-id": client_id}
    assert values["podLabels"] == {"azure.workload.identity/use": "true"}
    # The federation and the grant are in place before cert-manager first asks for a certificate.
    assert {one(plan, FEDERATION, "servestack-cert-manager-federation")["urn"],
            one(plan, ROLE, "servestack-cert-manager-dns01")["urn"]} <= set(release["dependencies"])
    (solver,) = inputs(plan, "kubernetes:cert-manager.io/v1:ClusterIssuer")["spec"]["acme"]["solvers"]
    assert solver["dns01"] == {"azureDNS": {
        "subscriptionID": DNS_SUBSCRIPTION, "resourceGroupName": "dns", "hostedZoneName": "servestack.example.com",
        "environment": "AzurePublicCloud", "managedIdentity": {"clientID": client_id}}}


def test_the_hostname_is_an_a_record_in_the_zones_own_subscription(plan: dict[str, Any]) -> None:
    hostname = read_stack_config(plan["stack"])["servestack:gateway"]["hostname"]
    assert plan["outputs"]["endpoint"] == f"https://{hostname}"
    assert re.fullmatch(r"203\.0\.113\.\d+", plan["outputs"]["address"])
    record = one(plan, RECORD)
    assert record["inputs"] == {"resourceGroupName": "dns", "zoneName": "servestack.example.com",
                                "relativeRecordSetName": hostname.removesuffix(".servestack.example.com"),
                                "recordType": "A", "ttl": 300.0,
                                "aRecords": [{"ipv4Address": plan["outputs"]["address"]}]}
    # Written through a provider of the zone's subscription, signed in as the default one is.
    provider = one(plan, "pulumi:providers:azure-native", "servestack-dns-zone")
    assert provider["inputs"]["subscriptionId"] == DNS_SUBSCRIPTION
    assert record["provider"] == provider["urn"]


@pytest.mark.parametrize(("gateway", "problem"), [
    ({"hostname": "api.other.example.org"},
     "servestack:gateway.hostname: 'api.other.example.org' is not inside the DNS zone 'servestack.example.com' that "
     f"servestack:gateway.dnsZone ('{DNS_ZONE}') names"),
    ({"hostname": "api.example.net", "dnsZone": f"{DNS_GROUP}/providers/Microsoft.Network/dnszones/example.net"},
     "`pulumi up` would fail: invoking azure-native:dns:getZone: (ResourceNotFound) The Resource "
     "'Microsoft.Network/dnszones/example.net' under resource group 'dns' was not found."),
], ids=["hostname-outside-the-zone", "unknown-zone"])
def test_a_hostname_the_zone_cannot_hold_fails_the_plan_by_name(tmp_path: Path, gateway: dict[str, Any],
                                                                 problem: str) -> None:
    config = read_stack_config("azure-dev")["servestack:gateway"]
    stacks = stack_variant(tmp_path, "azure-dev", "azure-zone", **{"servestack:gateway": {**config, **gateway}})
    with pytest.raises(PlanError) as error:
        plan_in_subprocess("azure-zone", stacks_dir=stacks)
    assert problem in str(error.value)


# --- config ---------------------------------------------------------------------------------------


def _azure(**azure_values: Any) -> dict[str, Any]:
    values = read_stack_config("azure-dev")
    values["servestack:azure"] = azure_values
    return values


def test_storage_ranges_take_single_addresses_as_azure_wants_them() -> None:
    config = parse_config("azure-dev", _azure(storageCidrs=["203.0.113.7/32", "198.51.100.0/24"]))
    assert config.azure.storage_cidrs == ("203.0.113.7", "198.51.100.0/24")


BAD_AZURE = [
    pytest.param({}, {"servestack:access": {"endpointCidrs": ["198.51.100.0/24"]}},
                 ["servestack:access.apiCidrs: missing, so the Kubernetes API's public endpoint would admit nobody, "
                  "and the machine running `pulumi up` (a laptop, a CI runner) sits outside the network this stack "
                  "creates, where the private endpoint is: every Kubernetes object of the stack would time out. "
                  "List the CIDR blocks of the deployer and the operators (the public endpoint admits only them; "
                  "nodes use the private endpoint)"], id="api-unreachable"),
    pytest.param({}, {"servestack:model": {"name": "tiny", "source": "bucket", "revision": "r1"}},
                 ["servestack:azure.storageCidrs: empty, but servestack:model.source is bucket: the storage "
                  "account's firewall would refuse the model's upload; list the uploader's address"],
                 id="bucket-model-without-storage-ranges"),
    pytest.param({}, {"azure-native:clientSecret": "s3cr3t"},
                 ["azure-native:clientSecret: set in the stack config, where the cluster's kubeconfig (kubelogin, "
                  "reading the environment) cannot read it, so Kubernetes would see another identity than the one "
                  "that made the cluster; set the ARM_* environment variables instead, which both read "
                  "(servestack:azure.deployerLogin spn or msi)"], id="credentials-in-config"),
    pytest.param({"privateCluster": True}, {},
                 ["servestack:azure.privateCluster: no longer a key: how the deployer reaches the API server is "
                  "servestack:access.apiAccess (see docs/azure.md)"], id="private-cluster-moved"),
    pytest.param({"deployerLogin": "spn", "deployerType": "User"}, {},
                 ["servestack:azure.deployerType: 'User', but servestack:azure.deployerLogin is 'spn', which signs "
                  "in an application or managed identity (a ServicePrincipal); set deployerType to "
                  "ServicePrincipal, or remove it"], id="user-signing-in-as-an-application"),
    pytest.param({"vnetCidr": "10.244.0.0/16"}, {},
                 ["servestack:azure.vnetCidr: '10.244.0.0/16' overlaps the cluster's pod range 10.244.0.0/16; "
                  "choose a range outside it, such as 10.20.0.0/16"], id="vnet-overlaps-pods"),
    pytest.param({"vnetCidr": "10.0.0.0/8"}, {},
                 ["servestack:azure.vnetCidr: '10.0.0.0/8' overlaps the cluster's pod range 10.244.0.0/16; "
                  "choose a range outside it, such as 10.20.0.0/16",
                  "servestack:azure.vnetCidr: '10.0.0.0/8' overlaps the cluster's service range 10.0.0.0/16; "
                  "choose a range outside it, such as 10.20.0.0/16"], id="vnet-overlaps-both"),
    pytest.param({"storageCidrs": ["10.1.0.0/16", "203.0.113.0/31", "0.0.0.0/0"]}, {},
                 ["servestack:azure.storageCidrs[0]: '10.1.0.0/16' is not allowed; the storage firewall takes "
                  "public IPv4 ranges from /1 to /30, or single addresses (/32)",
                  "servestack:azure.storageCidrs[1]: '203.0.113.0/31' is not allowed; the storage firewall takes "
                  "public IPv4 ranges from /1 to /30, or single addresses (/32)",
                  "servestack:azure.storageCidrs[2]: '0.0.0.0/0' is not allowed; the storage firewall takes "
                  "public IPv4 ranges from /1 to /30, or single addresses (/32)"], id="storage-ranges"),
    pytest.param({}, {"servestack:access": {"endpointCidrs": ["198.51.100.0/24"],
                                            "apiCidrs": ["203.0.113.0/24", "2001:db8::/32"]}},
                 ["servestack:access.apiCidrs[1]: '2001:db8::/32' is an IPv6 range; the AKS API server has an "
                  "IPv4 address only and admits IPv4 ranges"], id="ipv6-api-range"),
    pytest.param({"systemVmSize": "d4", "deployerType": "Robot", "zones": 3}, {},
                 ["servestack:azure.deployerType: 'Robot' is not a principal type; allowed: User, "
                  "ServicePrincipal",
                  "servestack:azure.zones: unknown key; known: deployerLogin, deployerType, storageCidrs, "
                  "systemVmSize, vnetCidr",
                  "servestack:azure.systemVmSize: 'd4' is not an Azure VM size such as Standard_D4ds_v5"],
                 id="vm-size-deployer-unknown"),
]


@pytest.mark.parametrize(("azure_values", "change", "expected"), BAD_AZURE)
def test_bad_azure_config_is_rejected_with_its_message(
        azure_values: dict[str, Any], change: dict[str, Any], expected: list[str]) -> None:
    values = {**_azure(**azure_values), **change}
    with pytest.raises(ConfigError) as raised:
        parse_config("azure-dev", values)
    assert raised.value.problems == expected


def test_other_clouds_ignore_the_azure_api_rules() -> None:
    """An AWS prod stack with operator ranges is not an Azure private cluster with apiCidrs."""
    config = parse_config("aws-prod", {
        "servestack:cloud": "aws", "aws:region": "us-east-1", "servestack:environment": "prod",
        "servestack:gpu": {"type": "nvidia-l4"}, "servestack:access": {
            "endpointCidrs": ["198.51.100.0/24"], "apiCidrs": ["203.0.113.0/24"]},
        "servestack:model": {"name": "tiny", "source": "bucket", "revision": "r1"},
        "servestack:gateway": {"hostname": "api.servestack.example.com", "dnsZone": "Z0SERVESTACKEXAMPLE0",
                               "acmeEmail": "ops@servestack.example.com"}})
    assert config.cloud == "aws"


def test_missing_cluster_outputs_fail_loudly() -> None:
    """A cluster without an OIDC issuer or kubelet identity must stop the program, not grant to nobody."""
    with pytest.raises(ValueError, match="no OIDC issuer URL"):
        azure._issuer_url(None)
    with pytest.raises(ValueError, match="no kubelet identity"):
        azure._kubelet_object_id({})


def test_container_insights_sends_the_container_logs_to_a_workspace_of_the_stack(
        stack_plan: Callable[[str], dict[str, Any]]) -> None:
    prod = stack_plan("azure-prod")
    group = f"{SUBSCRIPTION}/resourceGroups/servestack-azure-prod-rg"
    workspace_id = f"{group}/providers/Microsoft.OperationalInsights/workspaces/servestack-azure-prod-logs"
    workspace = inputs(prod, "azure-native:operationalinsights:Workspace", "servestack-logs")
    assert workspace["retentionInDays"] == 30 and workspace["sku"] == {"name": "PerGB2018"}
    assert workspace["features"] == {"disableLocalAuth": True}
    assert inputs(prod, CLUSTER)["addonProfiles"] == {"omsagent": {"enabled": True, "config": {
        "logAnalyticsWorkspaceResourceID": workspace_id, "useAADAuth": "true"}}}
    streams = ["Microsoft-ContainerLogV2", "Microsoft-KubeEvents", "Microsoft-KubePodInventory"]
    rule = inputs(prod, "azure-native:monitor:DataCollectionRule", "servestack-container-logs")
    assert rule["kind"] == "Linux"
    assert rule["dataSources"] == {"extensions": [{
        "name": "ContainerInsightsExtension", "extensionName": "ContainerInsights", "streams": streams,
        "extensionSettings": {"dataCollectionSettings": {"interval": "1m", "namespaceFilteringMode": "Off",
                                                         "enableContainerLogV2": True}}}]}
    assert rule["destinations"] == {"logAnalytics": [{"name": "ciworkspace", "workspaceResourceId": workspace_id}]}
    assert rule["dataFlows"] == [{"streams": streams, "destinations": ["ciworkspace"]}]
    association = inputs(prod, "azure-native:monitor:DataCollectionRuleAssociation")
    assert association == {
        "associationName": "ContainerInsightsExtension",
        "resourceUri": f"{group}/providers/Microsoft.ContainerService/managedClusters/servestack-azure-prod-aks",
        "dataCollectionRuleId": f"{group}/providers/Microsoft.Insights/dataCollectionRules/MSCI-servestack-azure-prod"}
    # Without monitoring: no agent, no workspace.
    dev = stack_plan("azure-dev")
    assert "addonProfiles" not in inputs(dev, CLUSTER)
    assert not resources(dev, "azure-native:operationalinsights:Workspace")
