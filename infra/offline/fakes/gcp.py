"""Google Cloud resources and invokes, with the ids, names and endpoints GCP would give them."""

from __future__ import annotations

import base64
from typing import Any

from pulumi.runtime.mocks import MockCallArgs, MockResourceArgs

from infra import versions
from infra.offline.fakes import CallFake, CloudError, FakeContext, ResourceFake

FAKE_PROJECT_NUMBER = "123456789012"


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
              or args.inputs.get("cryptoKeyId") or args.inputs.get("project") or "")
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
    return f"{cluster}/nodePools/{name}", {"name": name, "instanceGroupUrls": [], "operation": ""}


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
}

CALLS: dict[str, CallFake] = {
    "gcp:organizations/getProject:getProject": _get_project,
}
