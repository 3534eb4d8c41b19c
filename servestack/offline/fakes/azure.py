"""Azure resources and invokes (pulumi-azure-native) as ARM would fill them in.

Every resource gets an ARM id under one fake subscription and its `name`; the cluster, registry,
identities and storage account add the outputs the program reads (OIDC issuer, kubelet identity,
login server, client and principal ids, endpoints). The user-credentials invoke returns a base64
kubeconfig shaped like AKS's `format=exec` one.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from typing import Any

import yaml
from pulumi.runtime.mocks import MockCallArgs, MockResourceArgs

from infra import versions
from servestack.offline.fakes import CallFake, CloudError, FakeContext, ResourceFake

SUBSCRIPTION_ID = "00000000-0000-4000-8000-000000000001"
TENANT_ID = "00000000-0000-4000-8000-000000000002"
DEPLOYER_OBJECT_ID = "00000000-0000-4000-8000-000000000003"
# The deployer signed in with the Azure CLI (`az login`): its tokens carry the CLI's application id.
DEPLOYER_CLIENT_ID = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
# The public DNS zones the tenant holds (the stacks' servestack:gateway.dnsZone), by resource id: one in another
# subscription than the deployer's, as a shared DNS subscription would hold it.
DNS_ZONES: dict[str, str] = {
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/dns/providers/Microsoft.Network/dnszones/"
    "servestack.example.com": "Public",
}
# Any base64 will do for a CA bundle nobody verifies offline.
FAKE_CA = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nservestack offline plan\n-----END CERTIFICATE-----\n")


def _guid(ctx: FakeContext, *parts: str) -> str:
    return str(uuid.UUID(ctx.hex("guid", *parts, length=32)))


def _location(args: MockResourceArgs, ctx: FakeContext) -> str:
    return str(args.inputs.get("location") or ctx.config.get("azure-native:location") or "eastus")


def _group_id(args: MockResourceArgs) -> str:
    return f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{args.inputs.get('resourceGroupName', 'unknown')}"


def _arm(provider_path: str, name_key: str,
         extra: Callable[[MockResourceArgs, FakeContext, str, str], dict[str, Any]] | None = None) -> ResourceFake:
    """A fake for a resource at `<group>/providers/<provider_path>/<name>`, named by input `name_key`."""

    def fake(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
        name = str(args.inputs.get(name_key) or args.name)
        resource_id = f"{_group_id(args)}/providers/{provider_path.format(**args.inputs)}/{name}"
        outputs: dict[str, Any] = {"id": resource_id, "name": name, "location": _location(args, ctx),
                   "provisioningState": "Succeeded"}
        if extra is not None:
            outputs.update(extra(args, ctx, resource_id, name))
        if "identity" in args.inputs:
            outputs["identity"] = _identity_response(args.inputs["identity"], ctx, name)
        return resource_id, outputs

    return fake


def _identity_response(identity: Any, ctx: FakeContext, name: str) -> dict[str, Any]:
    """ARM answers a list of user-assigned identity ids with a map from id to the identity's ids."""
    response = dict(identity)
    assigned = response.get("userAssignedIdentities")
    if isinstance(assigned, list):
        response["userAssignedIdentities"] = {
            i: {"clientId": _guid(ctx, "client", i), "principalId": _guid(ctx, "principal", i)} for i in assigned}
    if "SystemAssigned" in str(response.get("type")):
        response.update(principalId=_guid(ctx, "principal", name), tenantId=TENANT_ID)
    return response


def _resource_group(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    name = str(args.inputs.get("resourceGroupName") or args.name)
    resource_id = f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{name}"
    return resource_id, {"id": resource_id, "name": name, "location": _location(args, ctx)}


def _identity(args: MockResourceArgs, ctx: FakeContext, resource_id: str, name: str) -> dict[str, Any]:
    return {"clientId": _guid(ctx, "client", name), "principalId": _guid(ctx, "principal", name),
            "tenantId": TENANT_ID}


def _cluster(args: MockResourceArgs, ctx: FakeContext, resource_id: str, name: str) -> dict[str, Any]:
    location = _location(args, ctx)
    version = str(args.inputs.get("kubernetesVersion") or "")
    offered = [r.minor for r in versions.window("azure", versions.today())]
    if version and version not in offered:
        raise CloudError(f"(K8sVersionNotSupported) Version {version} is not supported in this region. Please use "
                         f"[az aks get-versions] command to get the supported version list ({', '.join(offered)})")
    dns_prefix = args.inputs.get("dnsPrefix", name)
    private = bool((args.inputs.get("apiServerAccessProfile") or {}).get("enablePrivateCluster"))
    host = f"{dns_prefix}-{ctx.hex(name, length=8)}.{'privatelink.' if private else 'hcp.'}{location}.azmk8s.io"
    # A private cluster's name resolves, where it resolves at all, to its private endpoint in the VNet.
    ctx.register(host, f"10.{int(ctx.hex('ip', name, length=2), 16) % 200 + 20}.0.4" if private else
                 f"20.{int(ctx.hex('ip', name, length=2), 16) % 200 + 20}.10.10")
    ctx.memory.setdefault("aks_servers", {})[name] = host
    node_group = args.inputs.get("nodeResourceGroup", f"MC_{name}")
    kubelet = f"{name}-agentpool"
    return {
        "fqdn": "" if private else host,
        "privateFQDN": host if private else "",
        "azurePortalFQDN": host,
        "currentKubernetesVersion": f"{args.inputs.get('kubernetesVersion', '1.35')}.5",
        "oidcIssuerProfile": {"enabled": True,
                              "issuerURL": f"https://{location}.oic.prod-aks.azure.com/{TENANT_ID}/"
                                           f"{_guid(ctx, 'issuer', name)}/"},
        "identityProfile": {"kubeletidentity": {
            "clientId": _guid(ctx, "client", kubelet), "objectId": _guid(ctx, "principal", kubelet),
            "resourceId": f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{node_group}/providers/"
                          f"Microsoft.ManagedIdentity/userAssignedIdentities/{kubelet}"}},
        "powerState": {"code": "Running"},
    }


def _agent_pool(args: MockResourceArgs, ctx: FakeContext, resource_id: str, name: str) -> dict[str, Any]:
    """A spot pool's label and taint, which AKS adds to the pool's own properties (spot-node-pool docs)."""
    if args.inputs.get("scaleSetPriority") != "Spot":
        return {}
    spot = "kubernetes.azure.com/scalesetpriority"
    taints = list(args.inputs.get("nodeTaints") or [])
    return {"nodeLabels": {**(args.inputs.get("nodeLabels") or {}), spot: "spot"},
            "nodeTaints": taints if f"{spot}=spot:NoSchedule" in taints else [*taints, f"{spot}=spot:NoSchedule"]}


def _registry(args: MockResourceArgs, ctx: FakeContext, resource_id: str, name: str) -> dict[str, Any]:
    return {"loginServer": f"{name}.azurecr.io"}


def _storage_account(args: MockResourceArgs, ctx: FakeContext, resource_id: str, name: str) -> dict[str, Any]:
    return {"primaryEndpoints": {"blob": f"https://{name}.blob.core.windows.net/",
                                 "dfs": f"https://{name}.dfs.core.windows.net/"}}


def _public_ip(args: MockResourceArgs, ctx: FakeContext, resource_id: str, name: str) -> dict[str, Any]:
    # 198.51.100.0/24 is reserved for documentation.
    return {"ipAddress": f"198.51.100.{int(ctx.hex(name, length=2), 16) % 250 + 1}"}


def _role_assignment(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    name = _guid(ctx, "role-assignment", args.name)
    resource_id = f"{args.inputs.get('scope', '')}/providers/Microsoft.Authorization/roleAssignments/{name}"
    return resource_id, {"id": resource_id, "name": name}


def _flow_log(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    name = str(args.inputs.get("flowLogName") or args.name)
    resource_id = (f"{_group_id(args)}/providers/Microsoft.Network/networkWatchers/"
                   f"{args.inputs.get('networkWatcherName')}/flowLogs/{name}")
    outputs: dict[str, Any] = {"id": resource_id, "name": name}
    if "identity" in args.inputs:
        outputs["identity"] = _identity_response(args.inputs["identity"], ctx, name)
    return resource_id, outputs


def _provider(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    """An explicit provider: remembered, for the subscription its resources and invokes go to."""
    provider_id = _guid(ctx, "provider", args.name)
    ctx.memory.setdefault("azure_subscriptions", {})[provider_id] = str(args.inputs.get("subscriptionId")
                                                                        or SUBSCRIPTION_ID)
    return provider_id, {}


def _subscription(provider: str | None, ctx: FakeContext) -> str:
    """The subscription of the provider a resource or invoke names (`urn::id`); the deployer's by default."""
    provider_id = (provider or "").rsplit("::", 1)[-1]
    return str(ctx.memory.get("azure_subscriptions", {}).get(provider_id, SUBSCRIPTION_ID))


def _dns_zone_id(subscription: str, group: str, zone: str) -> str:
    """A DNS zone's id as ARM spells it, or ARM's answer for a zone that is not there."""
    wanted = f"/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.Network/dnszones/{zone}"
    for zone_id in DNS_ZONES:
        if zone_id.lower() == wanted.lower():  # ARM ids are case-insensitive
            return zone_id
    raise CloudError(f"(ResourceNotFound) The Resource 'Microsoft.Network/dnszones/{zone}' under resource group "
                     f"'{group}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix")


def _get_zone(args: MockCallArgs, ctx: FakeContext) -> dict[str, Any]:
    group, zone = str(args.args.get("resourceGroupName")), str(args.args.get("zoneName"))
    zone_id = _dns_zone_id(_subscription(args.provider, ctx), group, zone)
    return {"id": zone_id, "name": zone_id.rsplit("/", 1)[-1], "location": "global",
            "type": "Microsoft.Network/dnszones", "zoneType": DNS_ZONES[zone_id], "etag": _guid(ctx, "etag", zone_id),
            "maxNumberOfRecordSets": 10000.0, "maxNumberOfRecordsPerRecordSet": 20.0, "numberOfRecordSets": 2.0,
            "nameServers": [f"ns{n}-0{n}.azure-dns.{tld}." for n, tld in ((1, "com"), (2, "net"), (3, "org"),
                                                                           (4, "info"))],
            "azureApiVersion": "2023-07-01-preview"}


def _record_set(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    group, zone = str(args.inputs.get("resourceGroupName")), str(args.inputs.get("zoneName"))
    zone_id = _dns_zone_id(_subscription(args.provider, ctx), group, zone)
    kind, relative = str(args.inputs.get("recordType")), str(args.inputs.get("relativeRecordSetName"))
    resource_id = f"{zone_id}/{kind}/{relative}"
    fqdn = f"{zone_id.rsplit('/', 1)[-1]}." if relative == "@" else f"{relative}.{zone_id.rsplit('/', 1)[-1]}."
    return resource_id, {"id": resource_id, "name": relative, "type": f"Microsoft.Network/dnszones/{kind}",
                         "fqdn": fqdn, "provisioningState": "Succeeded", "etag": _guid(ctx, "etag", resource_id)}


def _role_definition(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    """A custom role: ARM ids it by its subscription, whichever scope it was written at."""
    name = str(args.inputs.get("roleDefinitionId") or _guid(ctx, "role-definition", args.name))
    scope = str(args.inputs.get("scope", ""))
    subscription = scope.split("/")[2] if scope.startswith("/subscriptions/") else SUBSCRIPTION_ID
    resource_id = f"/subscriptions/{subscription}/providers/Microsoft.Authorization/roleDefinitions/{name}"
    return resource_id, {"id": resource_id, "name": name, "roleType": "CustomRole",
                         "type": "Microsoft.Authorization/roleDefinitions"}


def _client_config(args: MockCallArgs, ctx: FakeContext) -> dict[str, Any]:
    return {"clientId": DEPLOYER_CLIENT_ID, "objectId": DEPLOYER_OBJECT_ID, "subscriptionId": SUBSCRIPTION_ID,
            "tenantId": TENANT_ID}


def _user_credentials(args: MockCallArgs, ctx: FakeContext) -> dict[str, Any]:
    """AKS's user kubeconfig in `exec` format: kubelogin with device-code login, pointing at the cluster's
    FQDN (its private one for a private cluster)."""
    cluster = str(args.args.get("resourceName"))
    server = f"https://{ctx.memory['aks_servers'][cluster]}:443"
    user = f"clusterUser_{args.args.get('resourceGroupName')}_{cluster}"
    kubeconfig = {
        "apiVersion": "v1", "kind": "Config", "current-context": cluster, "preferences": {},
        "clusters": [{"name": cluster, "cluster": {"certificate-authority-data": FAKE_CA.decode(),
                                                    "server": server}}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
        "users": [{"name": user, "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1", "command": "kubelogin",
            "args": ["get-token", "--login", "devicecode", "--server-id", "6dae42f8-4368-4678-94ff-3960e28e3630",
                     "--client-id", "80faf920-1908-4b52-b5ef-a8e7bedfc67a", "--tenant-id", TENANT_ID,
                     "--environment", "AzurePublicCloud"],
            "env": None, "installHint": "kubelogin is not installed", "provideClusterInfo": False}}}],
    }
    value = base64.b64encode(yaml.safe_dump(kubeconfig).encode()).decode()
    return {"kubeconfigs": [{"name": "clusterUser", "value": value}]}


def _rule_association(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    """An extension resource: ARM puts it under the resource it is associated with."""
    name = str(args.inputs.get("associationName") or args.name)
    resource_id = f"{args.inputs.get('resourceUri')}/providers/Microsoft.Insights/dataCollectionRuleAssociations/{name}"
    return resource_id, {"id": resource_id, "name": name, "provisioningState": "Succeeded"}


RESOURCES: dict[str, ResourceFake] = {
    "azure-native:resources:ResourceGroup": _resource_group,
    "azure-native:network:VirtualNetwork": _arm("Microsoft.Network/virtualNetworks", "virtualNetworkName"),
    "azure-native:network:Subnet": _arm("Microsoft.Network/virtualNetworks/{virtualNetworkName}/subnets",
                                        "subnetName"),
    "azure-native:network:NetworkSecurityGroup": _arm("Microsoft.Network/networkSecurityGroups",
                                                      "networkSecurityGroupName"),
    "azure-native:network:PublicIPAddress": _arm("Microsoft.Network/publicIPAddresses", "publicIpAddressName",
                                                 _public_ip),
    "azure-native:network:NatGateway": _arm("Microsoft.Network/natGateways", "natGatewayName"),
    "azure-native:network:FlowLog": _flow_log,
    "azure-native:managedidentity:UserAssignedIdentity": _arm(
        "Microsoft.ManagedIdentity/userAssignedIdentities", "resourceName", _identity),
    "azure-native:managedidentity:FederatedIdentityCredential": _arm(
        "Microsoft.ManagedIdentity/userAssignedIdentities/{resourceName}/federatedIdentityCredentials",
        "federatedIdentityCredentialResourceName"),
    "azure-native:containerservice:ManagedCluster": _arm("Microsoft.ContainerService/managedClusters",
                                                         "resourceName", _cluster),
    "azure-native:containerservice:AgentPool": _arm(
        "Microsoft.ContainerService/managedClusters/{resourceName}/agentPools", "agentPoolName", _agent_pool),
    "azure-native:containerregistry:Registry": _arm("Microsoft.ContainerRegistry/registries", "registryName",
                                                    _registry),
    "azure-native:storage:StorageAccount": _arm("Microsoft.Storage/storageAccounts", "accountName",
                                                _storage_account),
    "azure-native:storage:BlobContainer": _arm(
        "Microsoft.Storage/storageAccounts/{accountName}/blobServices/default/containers", "containerName"),
    "azure-native:operationalinsights:Workspace": _arm(
        "Microsoft.OperationalInsights/workspaces", "workspaceName",
        lambda args, ctx, resource_id, name: {"customerId": _guid(ctx, "workspace", name)}),
    "azure-native:monitor:DataCollectionRule": _arm(
        "Microsoft.Insights/dataCollectionRules", "dataCollectionRuleName",
        lambda args, ctx, resource_id, name: {"immutableId": f"dcr-{_guid(ctx, 'dcr', name).replace('-', '')}"}),
    "azure-native:monitor:DataCollectionRuleAssociation": _rule_association,
    "azure-native:authorization:RoleAssignment": _role_assignment,
    "azure-native:authorization:RoleDefinition": _role_definition,
    "azure-native:dns:RecordSet": _record_set,
    "pulumi:providers:azure-native": _provider,
}

def _network_watcher(args: MockCallArgs, ctx: FakeContext) -> dict[str, Any]:
    name, group = str(args.args["networkWatcherName"]), str(args.args["resourceGroupName"])
    return {"id": f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{group}/providers/Microsoft.Network/"
                  f"networkWatchers/{name}", "name": name, "location": name.removeprefix("NetworkWatcher_"),
            "provisioningState": "Succeeded"}


CALLS: dict[str, CallFake] = {
    "azure-native:network:getNetworkWatcher": _network_watcher,
    "azure-native:authorization:getClientConfig": _client_config,
    "azure-native:containerservice:listManagedClusterUserCredentials": _user_credentials,
    "azure-native:dns:getZone": _get_zone,
}
