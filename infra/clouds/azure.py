"""The Azure platform: an AKS cluster with private nodes and a GPU pool that scales from zero.

One component, `servestack:azure:GpuCluster`, declares:

- a resource group; a VNet whose node subnet carries the NSG and a NAT gateway (static public IP) for
  egress, so that nodes have no public IPs and the cluster's outbound type is `userAssignedNATGateway`;
  VNet flow logs in prod;
- AKS with Azure CNI overlay powered by Cilium (pods take addresses outside the VNet; Cilium enforces
  NetworkPolicy), Entra ID with Azure RBAC and local accounts off, OIDC issuer and workload identity on,
  patch auto-upgrades, and an API server restricted to the deployer's and operators' ranges;
- a CPU system pool tainted `CriticalAddonsOnly` and a GPU user pool tainted `nvidia.com/gpu`, scaling
  0..N, optionally spot; AKS installs the NVIDIA driver, the serving deployment installs the device plugin;
- ACR (no admin user) that the kubelet identity may pull from; a storage account (Entra ID only, HTTPS,
  TLS 1.2, firewalled to the node subnet) with a private `models` container;
- a user-assigned identity for the serving service account, federated with exactly that account, that
  may read the models container and nothing else;
- with the gateway and an Azure DNS zone (servestack:gateway.dnsZone): a user-assigned identity for cert-manager,
  federated with its service account, that may read, write and delete TXT record sets in that zone and nothing
  else (ACME DNS-01), and the hostname's A record there.

Role definitions are Azure's built-in ones, whose GUIDs are the same in every tenant, except cert-manager's: the
narrowest built-in role for DNS records, DNS Zone Contributor, may change every record set of the zone and the zone
itself, where DNS-01 needs the challenge's TXT record set alone.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random
import yaml
from pulumi_azure_native import (
    Provider,
    authorization,
    containerregistry,
    containerservice,
    dns,
    managedidentity,
    monitor,
    network,
    operationalinsights,
    resources,
    storage,
)
from pulumi_command import local

from infra import commands
from infra.clouds import dns as zones
from infra.config import (
    AZURE_DNS_SERVICE_IP,
    AZURE_POD_CIDR,
    AZURE_SERVICE_CIDR,
    DEFAULT_IMAGE_REPOSITORY,
    NAMESPACE,
    ConfigError,
    StackConfig,
)
from infra.gateway import CERT_MANAGER_NAMESPACE, CERT_MANAGER_SERVICE_ACCOUNT
from infra.platform import (
    GPU_POOL_LABEL,
    GPU_POOL_VALUE,
    GPU_TAINT_EFFECT,
    GPU_TAINT_KEY,
    GPU_TAINT_VALUE,
    GPU_TOLERATION,
    AcmeDns,
    Platform,
    Toleration,
    Upload,
    model_push_step,
)
from infra.serving import SERVICE_ACCOUNT as SERVICE_ACCOUNT_NAME

MODELS_CONTAINER = "models"

GPU_TAINT = f"{GPU_TAINT_KEY}={GPU_TAINT_VALUE}:{GPU_TAINT_EFFECT}"
SYSTEM_TAINT = "CriticalAddonsOnly=true:NoSchedule"
# The system pool's nodes, by the label AKS gives every node of a System-mode pool, and its taint's toleration.
SYSTEM_NODE_SELECTOR = {"kubernetes.azure.com/mode": "system"}
SYSTEM_TOLERATION = Toleration(key="CriticalAddonsOnly", operator="Exists", effect="NoSchedule")
# AKS puts this taint on every spot node whether asked or not; declaring it keeps plans free of drift.
SPOT_TAINT_KEY = "kubernetes.azure.com/scalesetpriority"
SPOT_TAINT = f"{SPOT_TAINT_KEY}=spot:NoSchedule"
SPOT_TOLERATION = Toleration(key=SPOT_TAINT_KEY, value="spot", effect="NoSchedule")

# Built-in role definitions.
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
STORAGE_BLOB_DATA_READER = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
NETWORK_CONTRIBUTOR = "4d97b98b-1d4f-4787-a291-c67834d212e7"
AKS_RBAC_CLUSTER_ADMIN = "b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b"
# listClusterUserCredential only: on-call fetches the Entra ID kubeconfig; Kubernetes RBAC decides the rest.
AKS_CLUSTER_USER = "4abbcc35-e782-43d8-92c5-2d3f1bd2253f"

# The Entra ID application behind every AKS API server: the audience kubelogin asks tokens for.
AKS_SERVER_APP_ID = "6dae42f8-4368-4678-94ff-3960e28e3630"
# Microsoft's public client applications through which people sign in (Azure CLI, Azure PowerShell,
# Visual Studio Code): a token issued to one of them is a user's; any other application is a principal
# of its own (a service principal or managed identity). pulumi-azure-native reports the token's appid as
# its client id.
USER_SIGN_IN_APPS = ("04b07795-8ddb-461a-bbee-02f9e1bf7b46", "1950a258-227b-4e31-a9cf-717495945fc2",
                     "aebc6443-996d-45c2-90f0-388ff96faa56")
# How long the first `up` waits for the deployer's new cluster-admin grant to reach the API server.
ACCESS_WAIT_MINUTES = 10
WORKLOAD_IDENTITY_AUDIENCE = "api://AzureADTokenExchange"
WORKLOAD_IDENTITY_CLIENT_ID = "azure.workload.identity/client-id"
WORKLOAD_IDENTITY_USE = "azure.workload.identity/use"
LB_IDLE_TIMEOUT = "service.beta.kubernetes.io/azure-load-balancer-tcp-idle-timeout"
# Azure's load balancer resets a connection idle for 4 minutes by default; a non-streaming request may
# stay silent until the server's own timeout (SERVESTACK_REQUEST_TIMEOUT_SECONDS, 300 s) answers 504.
LB_IDLE_TIMEOUT_MINUTES = 10
INTERNAL_LB = "service.beta.kubernetes.io/azure-load-balancer-internal"
INTERNAL_LB_SUBNET = "service.beta.kubernetes.io/azure-load-balancer-internal-subnet"
# What cert-manager's Azure DNS solver does with the zone it is given (hostedZoneName, so no zone lookup): read the
# challenge's TXT record set, write it, and delete it after.
ACME_DNS_ACTIONS = ("Microsoft.Network/dnszones/TXT/read", "Microsoft.Network/dnszones/TXT/write",
                    "Microsoft.Network/dnszones/TXT/delete")
DNS_ZONE_ID = re.compile(r"^/subscriptions/(?P<subscription>[^/]+)/resourceGroups/(?P<group>[^/]+)/providers/"
                         r"Microsoft\.Network/dnszones/(?P<zone>[^/]+)$", re.IGNORECASE)

NODE_SUBNET = "nodes"
FLOW_LOG_RETENTION_DAYS = 30
# Container Insights, logs only (the "Logs and events" preset): the containers' stdout (ContainerLogV2), the
# cluster's events and its pods' inventory; metrics are the stack's Prometheus's (infra/monitoring.py).
CONTAINER_LOG_STREAMS = ("Microsoft-ContainerLogV2", "Microsoft-KubeEvents", "Microsoft-KubePodInventory")
CONTAINER_LOG_RETENTION_DAYS = 30
# NSG priorities: lower numbers are evaluated first; the deny sits last among ours, before Azure's defaults.
PRIORITY_SERVING = 100
PRIORITY_LB_PROBES = 110
PRIORITY_INTRA = 120
PRIORITY_DENY_INTERNET = 4096


def build(config: StackConfig) -> Platform:
    cluster = GpuCluster("servestack", config)
    return cluster.platform


def role_definition(subscription_id: pulumi.Input[str], role: pulumi.Input[str]) -> pulumi.Output[str]:
    return pulumi.Output.concat("/subscriptions/", subscription_id,
                                "/providers/Microsoft.Authorization/roleDefinitions/", role)


def node_subnet_cidr(vnet_cidr: str) -> str:
    """The node subnet: the first quarter of the VNet (overlay pods take no VNet addresses)."""
    vnet = ipaddress.ip_network(vnet_cidr)
    return str(next(vnet.subnets(prefixlen_diff=2)))


def nsg_rules(config: StackConfig) -> list[network.SecurityRuleArgs]:
    """The node subnet's inbound rules, all inline on the NSG (and nowhere else)."""
    vnet_cidr = config.azure.vnet_cidr
    rules = []
    # The load balancer is IPv4 only: IPv6 clients could never reach it.
    clients = [c for c in config.access.endpoint_cidrs if ipaddress.ip_network(c).version == 4]
    ports = [str(port) for port in config.entry_ports]
    if clients:
        rules.append(network.SecurityRuleArgs(
            name="allow-serving-load-balancer",
            description=f"Clients in servestack:access.endpointCidrs to the serving load balancer's ports "
                        f"{', '.join(ports)}",
            priority=PRIORITY_SERVING, direction="Inbound", access="Allow", protocol="Tcp",
            source_address_prefixes=clients, source_port_range="*",
            # AKS load balancer rules use floating IP: packets reach whichever node runs the Envoy (or serving)
            # pods addressed to the frontend IP and the entry's own ports.
            destination_address_prefix="*", destination_port_ranges=ports,
        ))
    rules += [
        network.SecurityRuleArgs(
            name="allow-azure-load-balancer-probes",
            description="Azure load balancer health probes to the nodes",
            priority=PRIORITY_LB_PROBES, direction="Inbound", access="Allow", protocol="*",
            source_address_prefix="AzureLoadBalancer", source_port_range="*",
            destination_address_prefix=vnet_cidr, destination_port_range="*",
        ),
        network.SecurityRuleArgs(
            name="allow-intra-vnet",
            description="Nodes and overlay pods to each other",
            priority=PRIORITY_INTRA, direction="Inbound", access="Allow", protocol="*",
            source_address_prefixes=[vnet_cidr, AZURE_POD_CIDR], source_port_range="*",
            destination_address_prefixes=[vnet_cidr, AZURE_POD_CIDR], destination_port_range="*",
        ),
        network.SecurityRuleArgs(
            name="deny-internet-inbound",
            description="Nothing else from the internet",
            priority=PRIORITY_DENY_INTERNET, direction="Inbound", access="Deny", protocol="*",
            source_address_prefix="Internet", source_port_range="*",
            destination_address_prefix="*", destination_port_range="*",
        ),
    ]
    return rules


@dataclass(frozen=True)
class _Network:
    resource_group: resources.ResourceGroup
    vnet: network.VirtualNetwork
    subnet: network.Subnet
    egress_ip: network.PublicIPAddress


class GpuCluster(pulumi.ComponentResource):
    """Network, AKS with a system and a GPU pool, ACR, model storage and the serving workload identity."""

    kubeconfig: pulumi.Output[str]
    registry_url: pulumi.Output[str]
    model_bucket_uri: pulumi.Output[str]
    platform: Platform

    def __init__(self, name: str, config: StackConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("servestack:azure:GpuCluster", name, None, opts)
        if config.region is None or config.gpu.machine_type is None:
            raise ValueError("the azure platform needs azure-native:location and servestack:gpu.machineType")
        self._name = name
        self._config = config
        self._prefix = f"{name}-{pulumi.get_stack()}"
        self._child = pulumi.ResourceOptions(parent=self)
        self._client = authorization.get_client_config_output(opts=pulumi.InvokeOutputOptions(parent=self))
        self._deployer_type: pulumi.Input[str] = config.azure.deployer_type or self._client.client_id.apply(
            principal_type)
        # Registry and storage account names are global: a random suffix keeps them apart.
        self._suffix = random.RandomString(f"{name}-suffix", length=8, special=False, upper=False,
                                           opts=self._child).result

        net = self._network()
        cluster, admin_access = self._cluster(net)
        gpu_pool = self._gpu_pool(net, cluster)
        registry, acr_pull = self._registry(net, cluster)
        account, container = self._model_storage(net)
        # The deployer uploads models (and the first `up` checks for them) as itself: Entra ID only.
        model_uploads = authorization.RoleAssignment(
            f"{name}-deployer-model-uploads", principal_id=self._client.object_id, principal_type=self._deployer_type,
            role_definition_id=role_definition(self._client.subscription_id, STORAGE_BLOB_DATA_CONTRIBUTOR),
            scope=container.id, opts=self._child)
        uploads_account = pulumi.Output.all(account.name, model_uploads.id).apply(_first)
        serving_identity, serving_access = self._serving_identity(net, cluster, container)
        acme = self._acme_dns(net, cluster) if config.gateway.enabled and config.gateway.dns_zone else None

        login = config.azure.deployer_login
        self.kubeconfig = pulumi.Output.secret(
            containerservice.list_managed_cluster_user_credentials_output(
                resource_group_name=net.resource_group.name, resource_name=cluster.name, format="exec",
                opts=pulumi.InvokeOutputOptions(parent=self),
            ).kubeconfigs.apply(lambda kubeconfigs: kubelogin_kubeconfig(kubeconfigs, login)))
        provider = k8s.Provider(f"{name}-k8s", kubeconfig=self.kubeconfig, opts=self._child)
        # The grant takes minutes to reach the API server, and a Kubernetes object created before that gets
        # a 403 that pulumi-kubernetes does not retry: wait, bounded, until the deployer may create one.
        access_ready = local.Command(
            f"{name}-deployer-access-wait",
            create=commands.kubernetes_access("KUBECONFIG_DATA", ACCESS_WAIT_MINUTES * 60,
                                              "the deployer's cluster-admin grant"),
            environment={"KUBECONFIG_DATA": self.kubeconfig},
            triggers=[admin_access.id],
            opts=self._opts(depends_on=[admin_access, cluster]))
        self.registry_url = registry.login_server
        # The form serving/fetch.py reads, and one that a /models/NAME path can follow.
        self.model_bucket_uri = pulumi.Output.concat(
            "abfs://", container.name, "@", account.name, ".blob.core.windows.net")

        tolerations = [GPU_TOLERATION, *([SPOT_TOLERATION] if config.gpu.spot else [])]
        self.platform = Platform(
            cloud="azure",
            k8s_provider=provider,
            gpu_node_selector={GPU_POOL_LABEL: GPU_POOL_VALUE},
            gpu_tolerations=tuple(tolerations),
            # AKS installs the NVIDIA driver on GPU nodes, but not the device plugin.
            needs_device_plugin=True,
            registry_url=self.registry_url,
            model_bucket_uri=self.model_bucket_uri,
            service_account_annotations={WORKLOAD_IDENTITY_CLIENT_ID: serving_identity.client_id},
            pod_labels={WORKLOAD_IDENTITY_USE: "true"},
            load_balancer_annotations={LB_IDLE_TIMEOUT: str(LB_IDLE_TIMEOUT_MINUTES)},
            internal_load_balancer_annotations={INTERNAL_LB: "true", INTERNAL_LB_SUBNET: NODE_SUBNET},
            internal_cidrs=(config.azure.vnet_cidr,),
            # The init container fetches the model as the serving identity: its federation and its grant
            # must exist before the first pod starts.
            ready=(gpu_pool, access_ready, acr_pull, *serving_access),
            cluster=cluster,
            cluster_name=cluster.name,
            kubeconfig=self.kubeconfig,
            image_upload=lambda tag, build: acr_upload(registry.name, self.registry_url, tag, build),
            model_upload=lambda model, revision: blob_upload(uploads_account, MODELS_CONTAINER, model, revision),
            system_node_selector=SYSTEM_NODE_SELECTOR,
            system_tolerations=(SYSTEM_TOLERATION,),
            acme_dns=acme,
            # Entra ID groups arrive as their object ids (Kubernetes RBAC still decides beside Azure RBAC).
            access_groups={"viewer": config.access.viewer_groups, "operator": config.access.operator_groups},
        )
        self.register_outputs({
            "cluster_name": cluster.name,
            "resource_group": net.resource_group.name,
            "kubeconfig": self.kubeconfig,
            "registry_url": self.registry_url,
            "model_bucket_uri": self.model_bucket_uri,
        })

    # --- pieces -----------------------------------------------------------------------------------

    def _opts(self, **kwargs: Any) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions.merge(self._child, pulumi.ResourceOptions(**kwargs))

    def _network(self) -> _Network:
        name, config, region = self._name, self._config, self._config.region
        group = resources.ResourceGroup(f"{name}-resource-group", resource_group_name=f"{self._prefix}-rg",
                                        location=region, opts=self._child)
        rg = group.name
        vnet = network.VirtualNetwork(
            f"{name}-vnet", resource_group_name=rg, location=region, virtual_network_name=f"{self._prefix}-vnet",
            address_space=network.AddressSpaceArgs(address_prefixes=[config.azure.vnet_cidr]),
            opts=self._child)
        nsg = network.NetworkSecurityGroup(
            f"{name}-nodes-nsg", resource_group_name=rg, location=region,
            network_security_group_name=f"{self._prefix}-nodes-nsg", security_rules=nsg_rules(config),
            opts=self._child)
        egress_ip = network.PublicIPAddress(
            f"{name}-egress-ip", resource_group_name=rg, location=region,
            public_ip_address_name=f"{self._prefix}-egress-ip",
            sku=network.PublicIPAddressSkuArgs(name="Standard", tier="Regional"),
            public_ip_allocation_method="Static", public_ip_address_version="IPv4", opts=self._child)
        nat = network.NatGateway(
            f"{name}-nat", resource_group_name=rg, location=region, nat_gateway_name=f"{self._prefix}-nat",
            sku=network.NatGatewaySkuArgs(name="Standard"), idle_timeout_in_minutes=4,
            public_ip_addresses=[network.SubResourceArgs(id=egress_ip.id)], opts=self._child)
        subnet = network.Subnet(
            f"{name}-nodes-subnet", resource_group_name=rg, virtual_network_name=vnet.name,
            subnet_name=NODE_SUBNET, address_prefix=node_subnet_cidr(config.azure.vnet_cidr),
            network_security_group=network.NetworkSecurityGroupArgs(id=nsg.id),
            nat_gateway=network.SubResourceArgs(id=nat.id),
            # Egress only through the NAT gateway, never through Azure's implicit default outbound.
            default_outbound_access=False,
            # The model storage account admits this subnet through its service endpoint.
            service_endpoints=[network.ServiceEndpointPropertiesFormatArgs(service="Microsoft.Storage")],
            opts=self._child)
        if config.is_prod:
            self._flow_logs(group, vnet)
        return _Network(group, vnet, subnet, egress_ip)

    def _flow_logs(self, group: resources.ResourceGroup, vnet: network.VirtualNetwork) -> None:
        """VNet flow logs (NSG flow logs are retired) into a firewalled account, written as an identity."""
        name, region = self._name, self._config.region
        logs = storage.StorageAccount(
            f"{name}-flow-logs",
            _hardened_account(group.name, region, pulumi.Output.concat("servestacklogs", self._suffix),
                              sku="Standard_LRS", subnet_id=None, ip_ranges=()),
            opts=self._child)
        writer = managedidentity.UserAssignedIdentity(
            f"{name}-flow-logs-identity", resource_group_name=group.name, location=region,
            resource_name_=f"{self._prefix}-flow-logs", opts=self._child)
        grant = authorization.RoleAssignment(
            f"{name}-flow-logs-writer", principal_id=writer.principal_id, principal_type="ServicePrincipal",
            role_definition_id=role_definition(self._client.subscription_id, STORAGE_BLOB_DATA_CONTRIBUTOR),
            scope=logs.id, opts=self._child)
        # Azure creates one Network Watcher per region, in NetworkWatcherRG, with the region's first VNet
        # (unless a subscription policy opts out): look it up, so that a missing one fails the preview by
        # name instead of the flow log's creation.
        watcher = network.get_network_watcher_output(
            network_watcher_name=f"NetworkWatcher_{region}", resource_group_name="NetworkWatcherRG",
            opts=pulumi.InvokeOutputOptions(parent=self, depends_on=[vnet]))
        network.FlowLog(
            f"{name}-vnet-flow-log", network_watcher_name=watcher.name,
            resource_group_name="NetworkWatcherRG", location=region, flow_log_name=f"{self._prefix}-vnet",
            target_resource_id=vnet.id, storage_id=logs.id, enabled=True,
            format=network.FlowLogFormatParametersArgs(type="JSON", version=2),
            retention_policy=network.RetentionPolicyParametersArgs(days=FLOW_LOG_RETENTION_DAYS, enabled=True),
            identity=network.ManagedServiceIdentityArgs(type=network.ResourceIdentityType.USER_ASSIGNED,
                                                        user_assigned_identities=[writer.id]),
            opts=self._opts(depends_on=[grant]))

    def _cluster(self, net: _Network) -> tuple[containerservice.ManagedCluster, authorization.RoleAssignment]:
        name, config, rg = self._name, self._config, net.resource_group.name
        identity = managedidentity.UserAssignedIdentity(
            f"{name}-cluster-identity", resource_group_name=rg, location=config.region,
            resource_name_=f"{self._prefix}-cluster", opts=self._child)
        # A cluster in our own subnet manages its load balancers' addresses there.
        subnet_access = authorization.RoleAssignment(
            f"{name}-cluster-subnet-access", principal_id=identity.principal_id, principal_type="ServicePrincipal",
            role_definition_id=role_definition(self._client.subscription_id, NETWORK_CONTRIBUTOR),
            scope=net.subnet.id, opts=self._child)

        access = config.access
        # The deployer and operators reach the API server from access.apiCidrs; nodes reach it through the
        # NAT gateway, whose address must be admitted too (AKS adds only a load balancer's outbound IPs).
        api_access = containerservice.ManagedClusterAPIServerAccessProfileArgs(
            authorized_ip_ranges=net.egress_ip.ip_address.apply(
                lambda address: [*access.api_cidrs, f"{_required(address, 'the egress IP address')}/32"]))
        # Prod keeps three system nodes, so that CoreDNS and the other add-ons survive losing one.
        system_min, system_max = (3, 5) if config.is_prod else (1, 3)
        system_pool = containerservice.ManagedClusterAgentPoolProfileArgs(
            name="system", mode="System", type="VirtualMachineScaleSets", os_type="Linux", os_sku="AzureLinux",
            vm_size=config.azure.system_vm_size, enable_auto_scaling=True,
            count=system_min, min_count=system_min, max_count=system_max,
            node_taints=[SYSTEM_TAINT], enable_node_public_ip=False, vnet_subnet_id=net.subnet.id,
            orchestrator_version=config.kubernetes_version,
            # In prod the three system nodes spread over the region's zones.
            availability_zones=["1", "2", "3"] if config.is_prod else None,
        )
        workspace = self._log_workspace(net) if config.monitoring.enabled else None
        cluster = containerservice.ManagedCluster(
            f"{name}-aks", resource_group_name=rg, location=config.region, resource_name_=f"{self._prefix}-aks",
            dns_prefix=self._prefix, kubernetes_version=config.kubernetes_version,
            node_resource_group=f"{self._prefix}-nodes-rg",
            sku=containerservice.ManagedClusterSKUArgs(name="Base", tier="Standard" if config.is_prod else "Free"),
            identity=containerservice.ManagedClusterIdentityArgs(
                type=containerservice.ResourceIdentityType.USER_ASSIGNED, user_assigned_identities=[identity.id]),
            enable_rbac=True,
            disable_local_accounts=True,
            aad_profile=containerservice.ManagedClusterAADProfileArgs(
                managed=True, enable_azure_rbac=True, tenant_id=self._client.tenant_id),
            api_server_access_profile=api_access,
            network_profile=containerservice.ContainerServiceNetworkProfileArgs(
                network_plugin="azure", network_plugin_mode="overlay",
                network_dataplane="cilium", network_policy="cilium",
                pod_cidr=AZURE_POD_CIDR, service_cidr=AZURE_SERVICE_CIDR, dns_service_ip=AZURE_DNS_SERVICE_IP,
                outbound_type="userAssignedNATGateway", load_balancer_sku="standard",
            ),
            agent_pool_profiles=[system_pool],
            oidc_issuer_profile=containerservice.ManagedClusterOIDCIssuerProfileArgs(enabled=True),
            security_profile=containerservice.ManagedClusterSecurityProfileArgs(
                workload_identity=containerservice.ManagedClusterSecurityProfileWorkloadIdentityArgs(enabled=True),
                image_cleaner=containerservice.ManagedClusterSecurityProfileImageCleanerArgs(
                    enabled=True, interval_hours=168),
            ),
            auto_upgrade_profile=containerservice.ManagedClusterAutoUpgradeProfileArgs(
                upgrade_channel="patch", node_os_upgrade_channel="NodeImage"),
            # Container Insights' agent (ama-logs), sending to the workspace as the cluster's identity (Entra ID).
            addon_profiles={"omsagent": containerservice.ManagedClusterAddonProfileArgs(
                enabled=True, config={"logAnalyticsWorkspaceResourceID": workspace.id, "useAADAuth": "true"})}
            if workspace is not None else None,
            # The cluster autoscaler owns the system pool's size after creation.
            opts=self._opts(depends_on=[subnet_access], ignore_changes=["agentPoolProfiles[0].count"]),
        )
        if workspace is not None:
            self._container_logs(net, cluster, workspace)
        # Local accounts are off: whoever runs `pulumi up` needs Azure RBAC to deploy into the cluster.
        admin_access = authorization.RoleAssignment(
            f"{name}-deployer-cluster-admin", principal_id=self._client.object_id,
            principal_type=self._deployer_type,
            role_definition_id=role_definition(self._client.subscription_id, AKS_RBAC_CLUSTER_ADMIN),
            scope=cluster.id, opts=self._child)
        on_call = dict.fromkeys([*config.access.viewer_groups, *config.access.operator_groups])
        for group in on_call:
            authorization.RoleAssignment(
                f"{name}-on-call-{group}", principal_id=group, principal_type="Group",
                role_definition_id=role_definition(self._client.subscription_id, AKS_CLUSTER_USER),
                scope=cluster.id, opts=self._child)
        return cluster, admin_access

    def _log_workspace(self, net: _Network) -> operationalinsights.Workspace:
        return operationalinsights.Workspace(
            f"{self._name}-logs", resource_group_name=net.resource_group.name, location=self._config.region,
            workspace_name=f"{self._prefix}-logs",
            sku=operationalinsights.WorkspaceSkuArgs(name="PerGB2018"),
            retention_in_days=CONTAINER_LOG_RETENTION_DAYS,
            # Entra ID only: the agent signs in as the cluster's identity, never with the workspace's keys.
            features=operationalinsights.WorkspaceFeaturesArgs(disable_local_auth=True),
            opts=self._child)

    def _container_logs(self, net: _Network, cluster: containerservice.ManagedCluster,
                        workspace: operationalinsights.Workspace) -> None:
        """What the agent collects and where it sends it: a data collection rule, associated with the cluster (with
        Entra ID authentication the agent reads its configuration from this association)."""
        rule = monitor.DataCollectionRule(
            f"{self._name}-container-logs", resource_group_name=net.resource_group.name,
            location=self._config.region, data_collection_rule_name=f"MSCI-{self._prefix}", kind="Linux",
            data_sources={"extensions": [{
                "name": "ContainerInsightsExtension", "extension_name": "ContainerInsights",
                "streams": list(CONTAINER_LOG_STREAMS),
                "extension_settings": {"dataCollectionSettings": {
                    "interval": "1m", "namespaceFilteringMode": "Off", "enableContainerLogV2": True}}}]},
            destinations={"log_analytics": [{"name": "ciworkspace", "workspace_resource_id": workspace.id}]},
            data_flows=[{"streams": list(CONTAINER_LOG_STREAMS), "destinations": ["ciworkspace"]}],
            opts=self._child)
        monitor.DataCollectionRuleAssociation(
            f"{self._name}-container-logs-association", resource_uri=cluster.id,
            association_name="ContainerInsightsExtension", data_collection_rule_id=rule.id, opts=self._child)

    def _gpu_pool(self, net: _Network, cluster: containerservice.ManagedCluster) -> containerservice.AgentPool:
        config, gpu = self._config, self._config.gpu
        return containerservice.AgentPool(
            f"{self._name}-gpu-pool", resource_group_name=net.resource_group.name, resource_name_=cluster.name,
            # Ubuntu, AKS's default Linux node image, with the NVIDIA driver AKS installs on GPU sizes.
            agent_pool_name="gpu", mode="User", type="VirtualMachineScaleSets", os_type="Linux", os_sku="Ubuntu",
            vm_size=gpu.machine_type, orchestrator_version=config.kubernetes_version,
            enable_auto_scaling=True, count=gpu.min_nodes, min_count=gpu.min_nodes, max_count=gpu.max_nodes,
            node_taints=[GPU_TAINT, *([SPOT_TAINT] if gpu.spot else [])],
            # With spot, the label AKS puts on the pool itself, declared so that a refresh finds no drift.
            node_labels={GPU_POOL_LABEL: GPU_POOL_VALUE, "servestack.io/gpu-type": gpu.type or "none",
                         **({SPOT_TAINT_KEY: "spot"} if gpu.spot else {})},
            enable_node_public_ip=False, vnet_subnet_id=net.subnet.id, os_disk_size_gb=gpu.disk_gb,
            # AKS installs the NVIDIA driver; the device plugin comes with the serving deployment.
            gpu_profile=containerservice.GPUProfileArgs(driver="Install"),
            # Spot: an evicted VM is deleted (not kept deallocated), and any price up to on-demand is paid.
            scale_set_priority="Spot" if gpu.spot else "Regular",
            scale_set_eviction_policy="Delete" if gpu.spot else None,
            spot_max_price=-1.0 if gpu.spot else None,
            # An upgrade replaces one GPU node at a time in place instead of adding a surge node: no GPU
            # quota or dollars beyond maxNodes, and the serving PodDisruptionBudget allows one pod down.
            upgrade_settings=containerservice.AgentPoolUpgradeSettingsArgs(max_surge="0", max_unavailable="1"),
            # The cluster autoscaler owns the node count after creation.
            opts=self._opts(ignore_changes=["count"]),
        )

    def _registry(self, net: _Network, cluster: containerservice.ManagedCluster
                  ) -> tuple[containerregistry.Registry, authorization.RoleAssignment]:
        name, config = self._name, self._config
        registry = containerregistry.Registry(
            f"{name}-registry", resource_group_name=net.resource_group.name, location=config.region,
            registry_name=pulumi.Output.concat("servestack", self._suffix),
            sku=containerregistry.SkuArgs(name="Premium" if config.is_prod else "Basic"),
            admin_user_enabled=False, anonymous_pull_enabled=False, opts=self._child)
        kubelet = cluster.identity_profile.apply(_kubelet_object_id)
        acr_pull = authorization.RoleAssignment(
            f"{name}-kubelet-acr-pull", principal_id=kubelet, principal_type="ServicePrincipal",
            role_definition_id=role_definition(self._client.subscription_id, ACR_PULL),
            scope=registry.id, opts=self._child)
        return registry, acr_pull

    def _model_storage(self, net: _Network) -> tuple[storage.StorageAccount, storage.BlobContainer]:
        name, config = self._name, self._config
        account = storage.StorageAccount(
            f"{name}-models",
            _hardened_account(net.resource_group.name, config.region, pulumi.Output.concat("servestack", self._suffix),
                              sku="Standard_ZRS" if config.is_prod else "Standard_LRS",
                              subnet_id=net.subnet.id, ip_ranges=config.azure.storage_cidrs),
            opts=self._child)
        container = storage.BlobContainer(
            f"{name}-models-container", resource_group_name=net.resource_group.name, account_name=account.name,
            container_name=MODELS_CONTAINER, public_access=storage.PublicAccess.NONE, opts=self._child)
        return account, container

    def _serving_identity(self, net: _Network, cluster: containerservice.ManagedCluster,
                          container: storage.BlobContainer,
                          ) -> tuple[managedidentity.UserAssignedIdentity, tuple[pulumi.Resource, ...]]:
        """The serving identity, and what makes it usable: the federation with the service account, the grant."""
        name, config, rg = self._name, self._config, net.resource_group.name
        identity = managedidentity.UserAssignedIdentity(
            f"{name}-serving-identity", resource_group_name=rg, location=config.region,
            resource_name_=f"{self._prefix}-serving", opts=self._child)
        issuer = cluster.oidc_issuer_profile.apply(_issuer_url)
        federation = managedidentity.FederatedIdentityCredential(
            f"{name}-serving-federation", resource_group_name=rg, resource_name_=identity.name,
            federated_identity_credential_resource_name="servestack-serving",
            issuer=issuer, audiences=[WORKLOAD_IDENTITY_AUDIENCE],
            subject=service_account_subject(config.serving.namespace), opts=self._child)
        model_reader = authorization.RoleAssignment(
            f"{name}-serving-model-reader", principal_id=identity.principal_id, principal_type="ServicePrincipal",
            role_definition_id=role_definition(self._client.subscription_id, STORAGE_BLOB_DATA_READER),
            scope=container.id, opts=self._child)
        return identity, (federation, model_reader)

    def _acme_dns(self, net: _Network, cluster: containerservice.ManagedCluster) -> AcmeDns:
        """cert-manager's identity, federated with its service account and allowed the TXT record sets of the stack's
        DNS zone (ACME DNS-01), and the hostname's A record there."""
        name, config = self._name, self._config
        dns_zone, stack = str(config.gateway.dns_zone), config.stack
        subscription, group, zone_name = dns_zone_parts(stack, dns_zone)
        # The zone's name is part of its id: a hostname outside it fails here, before anything is created.
        zones.name_in_zone(stack, str(config.gateway.hostname), dns_zone, zone_name)
        group_id = f"/subscriptions/{subscription}/resourceGroups/{group}"
        # The zone may live in another subscription than the stack: its lookup and its record go through a provider
        # of that subscription (signed in as the default one is: the Azure CLI or the ARM_* variables).
        zone_provider = Provider(f"{name}-dns-zone", subscription_id=subscription, opts=self._child)
        zone = dns.get_zone_output(resource_group_name=group, zone_name=zone_name,
                                   opts=pulumi.InvokeOutputOptions(parent=self, provider=zone_provider))
        zone_id = zone.apply(lambda found: _public_zone_id(stack, dns_zone, found))

        identity = managedidentity.UserAssignedIdentity(
            f"{name}-cert-manager-identity", resource_group_name=net.resource_group.name, location=config.region,
            resource_name_=f"{self._prefix}-cert-manager", opts=self._child)
        federation = managedidentity.FederatedIdentityCredential(
            f"{name}-cert-manager-federation", resource_group_name=net.resource_group.name,
            resource_name_=identity.name, federated_identity_credential_resource_name="servestack-cert-manager",
            issuer=cluster.oidc_issuer_profile.apply(_issuer_url), audiences=[WORKLOAD_IDENTITY_AUDIENCE],
            subject=f"system:serviceaccount:{CERT_MANAGER_NAMESPACE}:{CERT_MANAGER_SERVICE_ACCOUNT}",
            opts=self._child)
        # A custom role is assignable no lower than a resource group: defined on the zone's group, assigned on the
        # zone alone. Its name must be unique in the tenant.
        role = authorization.RoleDefinition(
            f"{name}-acme-dns01-role", scope=group_id, assignable_scopes=[group_id],
            role_name=pulumi.Output.concat(f"servestack ACME DNS-01 ({self._prefix}-", self._suffix, ")"),
            description="cert-manager's DNS-01 solver: the TXT record sets of the DNS zone it is assigned on",
            permissions=[authorization.PermissionArgs(actions=list(ACME_DNS_ACTIONS))], opts=self._child)
        grant = authorization.RoleAssignment(
            f"{name}-cert-manager-dns01", principal_id=identity.principal_id, principal_type="ServicePrincipal",
            role_definition_id=role_definition(subscription, role.name), scope=zone_id, opts=self._child)

        def record(resource_name: str, host: str, address: pulumi.Output[str],
                   opts: pulumi.ResourceOptions) -> pulumi.Resource:
            return dns.RecordSet(
                resource_name, resource_group_name=group, zone_name=zone.name, record_type="A",
                relative_record_set_name=zones.name_in_zone(stack, host, dns_zone, zone_name) or "@",
                ttl=zones.RECORD_TTL, a_records=[dns.ARecordArgs(ipv4_address=address)],
                opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(provider=zone_provider)))

        return AcmeDns(
            solver={"azureDNS": {"subscriptionID": subscription, "resourceGroupName": group,
                                 "hostedZoneName": zone_name, "environment": "AzurePublicCloud",
                                 "managedIdentity": {"clientID": identity.client_id}}},
            service_account_annotations={WORKLOAD_IDENTITY_CLIENT_ID: identity.client_id},
            pod_labels={WORKLOAD_IDENTITY_USE: "true"},
            ready=(federation, grant),
            record=record,
        )


def dns_zone_parts(stack: str, dns_zone: str) -> tuple[str, str, str]:
    """The subscription, resource group and name of the DNS zone servestack:gateway.dnsZone names by its id."""
    match = DNS_ZONE_ID.match(dns_zone)
    if match is None:  # the config's own check names the form
        raise ConfigError(stack, [f"{NAMESPACE}:gateway.dnsZone: {dns_zone!r} is not an Azure DNS zone's resource id"])
    return match["subscription"], match["group"], match["zone"].lower()


def _public_zone_id(stack: str, dns_zone: str, zone: Any) -> str:
    if (zone.zone_type or "Public") != "Public":
        raise ConfigError(stack, [
            f"{NAMESPACE}:gateway.dnsZone: {dns_zone!r} is a {zone.zone_type} zone; the ACME server and the "
            "endpoint's clients resolve the hostname in public DNS: name a public DNS zone"])
    return str(zone.id)


def service_account_subject(namespace: str) -> str:
    return f"system:serviceaccount:{namespace}:{SERVICE_ACCOUNT_NAME}"


def _hardened_account(resource_group_name: pulumi.Input[str], location: str | None,
                      account_name: pulumi.Input[str], sku: str, subnet_id: pulumi.Input[str] | None,
                      ip_ranges: tuple[str, ...]) -> storage.StorageAccountArgs:
    """A storage account: Entra ID only, HTTPS with TLS 1.2, nothing public, firewalled."""
    vnet_rules = [] if subnet_id is None else [
        storage.VirtualNetworkRuleArgs(virtual_network_resource_id=subnet_id, action=storage.Action.ALLOW)]
    return storage.StorageAccountArgs(
        resource_group_name=resource_group_name,
        location=location,
        account_name=account_name,
        kind="StorageV2",
        sku=storage.SkuArgs(name=sku),
        enable_https_traffic_only=True,
        minimum_tls_version="TLS1_2",
        allow_blob_public_access=False,
        allow_shared_key_access=False,
        default_to_o_auth_authentication=True,
        allow_cross_tenant_replication=False,
        network_rule_set=storage.NetworkRuleSetArgs(
            default_action=storage.DefaultAction.DENY,
            # Trusted Azure services (Network Watcher writing flow logs) still get through.
            bypass="AzureServices",
            virtual_network_rules=vnet_rules,
            ip_rules=[storage.IPRuleArgs(i_p_address_or_range=r, action=storage.Action.ALLOW) for r in ip_ranges],
        ),
    )


def _first(values: list[Any]) -> Any:
    return values[0]


def _required(value: str | None, what: str) -> str:
    if not value:
        raise ValueError(f"Azure reported no value for {what}")
    return value


def _kubelet_object_id(profile: Any) -> str:
    """The kubelet identity's object id, from the cluster's identityProfile."""
    object_id = getattr((profile or {}).get("kubeletidentity"), "object_id", None)
    if not object_id:
        raise ValueError("the AKS cluster reported no kubelet identity (identityProfile.kubeletidentity)")
    return str(object_id)


def _issuer_url(profile: Any) -> str:
    url = getattr(profile, "issuer_url", None)
    if not url:
        raise ValueError("the AKS cluster reported no OIDC issuer URL (oidcIssuerProfile.issuerURL)")
    return str(url)


def principal_type(client_id: str) -> str:
    """The deployer's principal type, from the application its token was issued to."""
    return "User" if client_id.lower() in USER_SIGN_IN_APPS else "ServicePrincipal"


def kubelogin_args(login: str) -> list[str]:
    """kubelogin's arguments for the deployer's sign-in (servestack:azure.deployerLogin): the Azure CLI's
    login, or the ARM_* variables pulumi-azure-native reads, so that both act as one identity."""
    args = ["get-token", "--login", login, "--server-id", AKS_SERVER_APP_ID]
    if login in ("spn", "msi"):
        args.append("--use-azurerm-env-vars")
    return args


def kubelogin_kubeconfig(kubeconfigs: Any, login: str) -> str:
    """The cluster's user kubeconfig, authenticating through kubelogin as the deployer signs in.

    Local accounts are off, so every token comes from Entra ID."""
    if not kubeconfigs:
        raise ValueError("the AKS cluster returned no user kubeconfig")
    document = yaml.safe_load(base64.b64decode(kubeconfigs[0].value))
    for user in document.get("users") or []:
        user["user"] = {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "kubelogin",
            "args": kubelogin_args(login),
            "interactiveMode": "Never",
            "provideClusterInfo": False,
        }}
    return str(yaml.safe_dump(document, sort_keys=False))


def acr_upload(registry: pulumi.Input[str], login_server: pulumi.Input[str], tag: str, build: str) -> Upload:
    image = pulumi.Output.concat(login_server, f"/{DEFAULT_IMAGE_REPOSITORY}:{tag}")
    return Upload(
        what=f"the serving image {DEFAULT_IMAGE_REPOSITORY}:{tag}",
        check=pulumi.Output.concat("az acr repository show --name ", registry,
                                   f" --image {DEFAULT_IMAGE_REPOSITORY}:{tag}"),
        steps=[pulumi.Output.concat("az acr login --name ", registry),
               pulumi.Output.concat(f"docker build {build}-t ", image, " serving"),
               pulumi.Output.concat("docker push ", image)])


def blob_upload(account: pulumi.Input[str], container: str, model: str, revision: str) -> Upload:
    where = f"--container-name {container} --auth-mode login"
    # The manifest is uploaded last: once it is there, the revision is whole.
    return Upload(
        what=f"the model {model} at revision {revision} in the stack's storage account",
        check=pulumi.Output.concat("az storage blob exists --account-name ", account, f" {where} --name ",
                                   f"models/{model}/{revision}/manifest.json --query exists --output tsv "
                                   "| grep -qx true"),
        steps=[model_push_step(revision)])
