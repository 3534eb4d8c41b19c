"""Google Cloud resources and invokes, with the ids, names and endpoints GCP would give them."""

from __future__ import annotations

import base64
import re
from typing import Any

from pulumi.runtime.mocks import MockCallArgs, MockResourceArgs

from infra import versions
from servestack.offline.fakes import CallFake, CloudError, FakeContext, ResourceFake

FAKE_PROJECT_NUMBER = "123456789012"
# The Cloud DNS managed zones the stacks' projects hold (servestack:gateway.dnsZone), by zone name.
MANAGED_ZONES: dict[str, dict[str, str]] = {
    "servestack-example": {"dnsName": "servestack.example.com.", "visibility": "public"},
}
# The total graceful node shutdown GKE accepts on a spot or preemptible pool.
SPOT_SHUTDOWN_SECONDS = (0, 30, 120)


def _project(args: MockResourceArgs, ctx: FakeContext) -> str:
    return str(args.inputs.get("project") or ctx.config.get("gcp:project") or "servestack-project")


def _region(args: MockResourceArgs, ctx: FakeContext) -> str:
    return str(args.inputs.get("region") or ctx.config.get("gcp:region") or "us-central1")


def _name(args: MockResourceArgs, ctx: FakeContext) -> str:
    """The explicit name, or Pulumi's auto-name: the resource name and a random suffix."""
    return str(args.inputs.get("name") or f"{args.name}-{ctx.hex(args.typ, args.name, length=7)}")


def _network(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    name = _name(args, ctx)
    path = f"projects/{_project(args, ctx)}/global/networks/{name}"
    return path, {"name": name, "selfLink": f"https://www.googleapis.com/compute/v1/{path}",
                  "gatewayIpv4": ""}


def _regional(kind: str) -> ResourceFake:
    def fake(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
        name = _name(args, ctx)
        path = f"projects/{_project(args, ctx)}/regions/{_region(args, ctx)}/{kind}/{name}"
        return path, {"name": name, "selfLink": f"https://www.googleapis.com/compute/v1/{path}"}
    return fake


def _firewall(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    name = _name(args, ctx)
    path = f"projects/{_project(args, ctx)}/global/firewalls/{name}"
    return path, {"name": name, "selfLink": f"https://www.googleapis.com/compute/v1/{path}"}


def _router_nat(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    name = _name(args, ctx)
    return f"{_project(args, ctx)}/{_region(args, ctx)}/{args.inputs.get('router')}/{name}", {"name": name}


def _service_account(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    project = _project(args, ctx)
    email = f"{args.inputs['accountId']}@{project}.iam.gserviceaccount.com"
    path = f"projects/{project}/serviceAccounts/{email}"
    return path, {"email": email, "name": path, "member": f"serviceAccount:{email}",
                  "uniqueId": str(int(ctx.hex("sa", args.name, length=15), 16))[:21]}


def _iam_member(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    target = (args.inputs.get("serviceAccountId") or args.inputs.get("bucket") or args.inputs.get("repository")
              or args.inputs.get("cryptoKeyId") or args.inputs.get("managedZone") or args.inputs.get("project") or "")
    return f"{target}/{args.inputs.get('role')}/{args.inputs.get('member')}", {"etag": f"BwY{ctx.hex(args.name)}"}


def _service(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    return f"{_project(args, ctx)}/{args.inputs['service']}", {}


def _cluster(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    project, name = _project(args, ctx), _name(args, ctx)
    location = str(args.inputs.get("location"))
    version = str(args.inputs.get("minMasterVersion") or "")
    channel = str((args.inputs.get("releaseChannel") or {}).get("channel") or "REGULAR")
    offered = [r.minor for r in versions.window("gcp", versions.today(), extended=channel == "EXTENDED")]
    if version and version not in offered:
        raise CloudError(f"Error 400: Master version \"{version}\" is unsupported in channel {channel}; the channel "
                         f"offers {', '.join(offered)}")
    private = dict(args.inputs.get("privateClusterConfig") or {})
    master = str(private.get("masterIpv4CidrBlock") or "172.16.0.32/28")
    private_ip = master.rsplit(".", 1)[0] + "." + str(int(master.rsplit(".", 1)[1].split("/")[0]) + 2)
    # 34.x addresses are Google's; the last octet is stable per stack.
    public_ip = f"34.{int(ctx.hex('ip1', length=2), 16) % 200 + 20}.{int(ctx.hex('ip2', length=2), 16)}.10"
    private.update({"privateEndpoint": private_ip, "publicEndpoint": public_ip,
                    "peeringName": f"gke-n{ctx.hex('peer', length=16)}-peer"})
    ca = base64.b64encode(f"-----BEGIN CERTIFICATE-----\nfake CA of {name}\n-----END CERTIFICATE-----\n"
                          .encode()).decode()
    path = f"projects/{project}/locations/{location}/clusters/{name}"
    # Every cluster has a DNS endpoint; it admits traffic from outside Google's network only when asked.
    endpoints = dict(args.inputs.get("controlPlaneEndpointsConfig") or {})
    dns_config = dict(endpoints.get("dnsEndpointConfig") or {})
    region = location if location.count("-") == 1 else location.rsplit("-", 1)[0]
    dns_config["endpoint"] = f"gke-{ctx.hex('dns', name, length=32)}-{FAKE_PROJECT_NUMBER}.{region}.gke.goog"
    # The DNS endpoint is Google's front end (a public address); the IP endpoints are what they are.
    ctx.register(dns_config["endpoint"], "34.110.200.10" if dns_config.get("allowExternalTraffic") else private_ip)
    ctx.memory.setdefault("gke_versions", {})[path] = version
    endpoints["dnsEndpointConfig"] = dns_config
    return path, {
        "name": name,
        "endpoint": private_ip if private.get("enablePrivateEndpoint") else public_ip,
        "privateClusterConfig": private,
        "controlPlaneEndpointsConfig": endpoints,
        "masterAuth": {**dict(args.inputs.get("masterAuth") or {}), "clusterCaCertificate": ca},
        "selfLink": f"https://container.googleapis.com/v1/{path}",
        "masterVersion": f"{args.inputs.get('minMasterVersion', '1.35')}.5-gke.1000000",
        "operation": "",
    }


def _node_pool(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    name = _name(args, ctx)
    cluster = str(args.inputs.get("cluster"))
    _check_shutdown(args.inputs.get("nodeConfig") or {}, ctx.memory.get("gke_versions", {}).get(cluster, ""))
    return f"{cluster}/nodePools/{name}", {"name": name, "instanceGroupUrls": [], "operation": ""}


def _check_shutdown(node_config: dict[str, Any], version: str) -> None:
    """GKE's rules for a pool's graceful node shutdown: spot or preemptible pools only, on 1.35 and later, a total
    of 0, 30 or 120 seconds, of which the critical pods' share is no more."""
    kubelet = node_config.get("kubeletConfig") or {}
    total, critical = kubelet.get("shutdownGracePeriodSeconds"), kubelet.get("shutdownGracePeriodCriticalPodsSeconds")
    if total is None and critical is None:
        return
    field = "nodePool.config.kubeletConfig.shutdownGracePeriodSeconds"
    if not (node_config.get("spot") or node_config.get("preemptible")):
        raise CloudError(f"Error 400: {field} can only be set on node pools of Spot or preemptible VMs., badRequest")
    if version and tuple(int(p) for p in version.split(".")[:2]) < (1, 35):
        raise CloudError(f"Error 400: {field} requires GKE version 1.35.0-gke.1171000 or later (the cluster runs "
                         f"{version})., badRequest")
    if total not in SPOT_SHUTDOWN_SECONDS:
        raise CloudError(f"Error 400: Invalid value for {field}: {total}; allowed: "
                         f"{', '.join(map(str, SPOT_SHUTDOWN_SECONDS))}., badRequest")
    if critical is not None and critical > total:
        raise CloudError(f"Error 400: {field}CriticalPods ({critical}) must not exceed {field} ({total}).,"
                         " badRequest")


def _custom_role(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    role_id = str(args.inputs.get("roleId"))
    if not re.fullmatch(r"[a-zA-Z0-9_.]{3,64}", role_id):
        raise CloudError(f"Error 400: The role_id ({role_id}) contains invalid characters or is not 3 to 64 "
                         "characters long., badRequest")
    path = f"projects/{_project(args, ctx)}/roles/{role_id}"
    return path, {"name": path, "stage": "GA", "deleted": False}


def _managed_zone(project: str, name: str) -> dict[str, str]:
    zone = MANAGED_ZONES.get(name)
    if zone is None:
        raise CloudError(f"Error when reading or editing DNS Managed Zone \"projects/{project}/managedZones/{name}\": "
                         f"googleapi: Error 404: The 'parameters.managedZone' resource named '{name}' does not exist., "
                         "notFound")
    return zone


def _record_set(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    """A record set, refused as Cloud DNS refuses a change: a name without its final dot, or outside the zone."""
    project, zone_name = _project(args, ctx), str(args.inputs.get("managedZone"))
    zone = _managed_zone(project, zone_name)["dnsName"]
    name, kind = str(args.inputs.get("name")), str(args.inputs.get("type"))
    if not name.endswith(".") or not (name == zone or name.endswith(f".{zone}")):
        raise CloudError(f"Error 400: Invalid value for 'entity.change.additions[0].name': '{name}', invalid")
    return f"projects/{project}/managedZones/{zone_name}/rrsets/{name}/{kind}", {}


def _repository(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    project, location = _project(args, ctx), str(args.inputs.get("location"))
    repository_id = str(args.inputs.get("repositoryId") or _name(args, ctx))
    path = f"projects/{project}/locations/{location}/repositories/{repository_id}"
    return path, {"name": repository_id, "repositoryId": repository_id,
                  "registryUri": f"{location}-docker.pkg.dev/{project}/{repository_id}"}


def _bucket(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    name = _name(args, ctx)
    return name, {"name": name, "url": f"gs://{name}",
                  "selfLink": f"https://www.googleapis.com/storage/v1/b/{name}"}


def _key_ring(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    name = _name(args, ctx)
    return f"projects/{_project(args, ctx)}/locations/{args.inputs.get('location')}/keyRings/{name}", {"name": name}


def _crypto_key(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    name = _name(args, ctx)
    return f"{args.inputs.get('keyRing')}/cryptoKeys/{name}", {"name": name}


def _service_identity(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    service = str(args.inputs.get("service"))
    agents = {"container.googleapis.com": "container-engine-robot"}
    email = f"service-{FAKE_PROJECT_NUMBER}@{agents.get(service, service.split('.')[0])}.iam.gserviceaccount.com"
    return f"projects/{_project(args, ctx)}/services/{service}", {"email": email, "member": f"serviceAccount:{email}"}


def _get_project(args: MockCallArgs, ctx: FakeContext) -> dict[str, Any]:
    project = str(args.args.get("projectId") or ctx.config.get("gcp:project"))
    return {"projectId": project, "number": FAKE_PROJECT_NUMBER, "name": project,
            "id": f"projects/{project}"}


def _get_managed_zone(args: MockCallArgs, ctx: FakeContext) -> dict[str, Any]:
    project = str(args.args.get("project") or ctx.config.get("gcp:project"))
    name = str(args.args.get("name"))
    zone = _managed_zone(project, name)
    return {"id": f"projects/{project}/managedZones/{name}", "name": name, "project": project,
            "dnsName": zone["dnsName"], "visibility": zone["visibility"], "description": "",
            "managedZoneId": str(int(ctx.hex("zone", name, length=12), 16)),
            "nameServers": [f"ns-cloud-a{n}.googledomains.com." for n in range(1, 5)]}


RESOURCES: dict[str, ResourceFake] = {
    "gcp:projects/service:Service": _service,
    "gcp:projects/serviceIdentity:ServiceIdentity": _service_identity,
    "gcp:compute/network:Network": _network,
    "gcp:compute/subnetwork:Subnetwork": _regional("subnetworks"),
    "gcp:compute/router:Router": _regional("routers"),
    "gcp:compute/routerNat:RouterNat": _router_nat,
    "gcp:compute/firewall:Firewall": _firewall,
    "gcp:serviceaccount/account:Account": _service_account,
    "gcp:serviceaccount/iAMMember:IAMMember": _iam_member,
    "gcp:projects/iAMMember:IAMMember": _iam_member,
    "gcp:storage/bucketIAMMember:BucketIAMMember": _iam_member,
    "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember": _iam_member,
    "gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember": _iam_member,
    "gcp:container/cluster:Cluster": _cluster,
    "gcp:container/nodePool:NodePool": _node_pool,
    "gcp:artifactregistry/repository:Repository": _repository,
    "gcp:storage/bucket:Bucket": _bucket,
    "gcp:kms/keyRing:KeyRing": _key_ring,
    "gcp:kms/cryptoKey:CryptoKey": _crypto_key,
    "gcp:projects/iAMCustomRole:IAMCustomRole": _custom_role,
    "gcp:dns/dnsManagedZoneIamMember:DnsManagedZoneIamMember": _iam_member,
    "gcp:dns/recordSet:RecordSet": _record_set,
}

CALLS: dict[str, CallFake] = {
    "gcp:organizations/getProject:getProject": _get_project,
    "gcp:dns/getManagedZone:getManagedZone": _get_managed_zone,
}
