"""AWS resources and invokes, as the AWS provider would fill them in (ids, ARNs, endpoints, names)."""

from __future__ import annotations

import base64
from typing import Any

from pulumi.runtime.mocks import MockCallArgs, MockResourceArgs

from infra import versions
from servestack.offline.fakes import CallFake, CloudError, FakeContext, ResourceFake

# A placeholder account, the one AWS's own documentation uses.
ACCOUNT = "123456789012"
DEPLOYER_ROLE = "platform-deployer"


def _region(ctx: FakeContext) -> str:
    return str(ctx.config.get("aws:region", "us-east-1"))


def _autoname(args: MockResourceArgs, ctx: FakeContext, key: str = "name") -> str:
    """The given name, or Pulumi's auto-name: the logical name plus a random suffix."""
    given = args.inputs.get(key)
    return str(given) if given else f"{args.name}-{ctx.hex(args.typ, args.name, length=7)}"


def _prefixed(prefix: str, service: str | None = None, kind: str | None = None) -> ResourceFake:
    """A resource whose id is `<prefix>-<hex>` and whose ARN is `arn:aws:<service>:...:<kind>/<id>`."""

    def fake(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
        resource_id = f"{prefix}-{ctx.hex(args.typ, args.name)}"
        outputs: dict[str, Any] = {}
        if service and kind:
            outputs["arn"] = f"arn:aws:{service}:{_region(ctx)}:{ACCOUNT}:{kind}/{resource_id}"
        return resource_id, outputs

    return fake


def _eip(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    allocation = f"eipalloc-{ctx.hex(args.typ, args.name)}"
    # 198.51.100.0/24 is reserved for documentation.
    octet = int(ctx.hex(args.name, length=2), 16) % 250 + 1
    return allocation, {"allocationId": allocation, "publicIp": f"198.51.100.{octet}"}


def _launch_template(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    template = f"lt-{ctx.hex(args.typ, args.name)}"
    return template, {"latestVersion": 1, "defaultVersion": 1,
                      "arn": f"arn:aws:ec2:{_region(ctx)}:{ACCOUNT}:launch-template/{template}"}


def _role(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    name = _autoname(args, ctx)
    return name, {"name": name, "arn": f"arn:aws:iam::{ACCOUNT}:role/{name}",
                  "uniqueId": f"AROA{ctx.hex(args.name, length=17).upper()}"}


def _role_policy(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    name = _autoname(args, ctx)
    return f"{args.inputs.get('role')}:{name}", {"name": name}


def _attachment(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    return f"{args.inputs.get('role')}-{ctx.hex(args.name, length=8)}", {}


def _kms_key(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    key_id = "-".join(ctx.hex(args.name, part, length=n) for part, n in (("a", 8), ("b", 4), ("c", 4),
                                                                         ("d", 4), ("e", 12)))
    return key_id, {"keyId": key_id, "arn": f"arn:aws:kms:{_region(ctx)}:{ACCOUNT}:key/{key_id}"}


def _log_group(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    name = _autoname(args, ctx)
    return name, {"name": name, "arn": f"arn:aws:logs:{_region(ctx)}:{ACCOUNT}:log-group:{name}"}


def _cluster(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    name, region = _autoname(args, ctx), _region(ctx)
    version = str(args.inputs.get("version") or "")
    offered = [r.minor for r in versions.window("aws", versions.today())]
    if version and version not in offered:
        raise CloudError(f"InvalidParameterException: unsupported Kubernetes version {version}; EKS offers "
                         f"{', '.join(offered)}")
    ctx.memory.setdefault("eks_versions", {})[name] = version or offered[-1]
    oidc_id = ctx.hex("oidc", name, length=32).upper()
    ca = base64.b64encode(f"-----BEGIN CERTIFICATE-----\n{ctx.hex('ca', name, length=64)}\n"
                          "-----END CERTIFICATE-----\n".encode()).decode()
    vpc_config = dict(args.inputs.get("vpcConfig") or {})
    vpc_config.update({"clusterSecurityGroupId": f"sg-{ctx.hex('eks-cluster-sg', name)}",
                       "vpcId": f"vpc-{ctx.hex('vpc', name)}"})
    # The endpoint's name is public DNS either way; with the public endpoint off it resolves to the
    # control plane's addresses inside the VPC (EKS user guide, "Cluster API server endpoint").
    host = f"{oidc_id}.gr7.{region}.eks.amazonaws.com"
    public = vpc_config.get("endpointPublicAccess", True) and vpc_config.get("publicAccessCidrs") != []
    ctx.register(host, f"3.{int(ctx.hex('ip', name, length=2), 16) % 200 + 20}.10.10" if public
                 else f"10.0.{int(ctx.hex('ip', name, length=2), 16) % 60}.10")
    return name, {
        "name": name,
        "arn": f"arn:aws:eks:{region}:{ACCOUNT}:cluster/{name}",
        "endpoint": f"https://{host}",
        "certificateAuthority": {"data": ca},
        "identities": [{"oidcs": [{"issuer": f"https://oidc.eks.{region}.amazonaws.com/id/{oidc_id}"}]}],
        "platformVersion": "eks.10",
        "status": "ACTIVE",
        "vpcConfig": vpc_config,
    }


def _node_group(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    cluster = str(args.inputs.get("clusterName"))
    name = _autoname(args, ctx, "nodeGroupName")
    uuid = ctx.hex("nodegroup", name, length=32)
    return f"{cluster}:{name}", {
        "nodeGroupName": name,
        "arn": f"arn:aws:eks:{_region(ctx)}:{ACCOUNT}:nodegroup/{cluster}/{name}/{uuid}",
        "resources": [{"autoscalingGroups": [{"name": f"eks-{name}-{uuid}"}], "remoteAccessSecurityGroupId": ""}],
        "status": "ACTIVE",
    }


def _addon(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    cluster, addon = str(args.inputs.get("clusterName")), str(args.inputs.get("addonName"))
    version, wanted = ctx.memory.get("eks_versions", {}).get(cluster, ""), args.inputs.get("addonVersion")
    builds = EKS_ADDON_BUILDS.get(version, {}).get(addon, ())
    if wanted not in builds:
        raise CloudError(f"InvalidParameterException: Addon version specified is not supported ({addon} {wanted} "
                         f"on Kubernetes {version}; published: {', '.join(builds) or 'none'})")
    return f"{cluster}:{addon}", {"arn": f"arn:aws:eks:{_region(ctx)}:{ACCOUNT}:addon/{cluster}/{addon}/"
                                         f"{ctx.hex(args.name, length=32)}"}


def _oidc_provider(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    url = str(args.inputs.get("url", "")).removeprefix("https://")
    arn = f"arn:aws:iam::{ACCOUNT}:oidc-provider/{url}"
    return arn, {"arn": arn}


def _repository(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    name = _autoname(args, ctx)
    return name, {"name": name, "registryId": ACCOUNT,
                  "arn": f"arn:aws:ecr:{_region(ctx)}:{ACCOUNT}:repository/{name}",
                  "repositoryUrl": f"{ACCOUNT}.dkr.ecr.{_region(ctx)}.amazonaws.com/{name}"}


def _bucket(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    name = _autoname(args, ctx, "bucket")
    return name, {"bucket": name, "arn": f"arn:aws:s3:::{name}", "region": _region(ctx),
                  "bucketDomainName": f"{name}.s3.amazonaws.com"}


def _security_group(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    group = f"sg-{ctx.hex(args.typ, args.name)}"
    return group, {"arn": f"arn:aws:ec2:{_region(ctx)}:{ACCOUNT}:security-group/{group}", "ownerId": ACCOUNT,
                   "name": _autoname(args, ctx)}


# The placeholder account's Route 53 hosted zones (the stacks' servestack:gateway.dnsZone), by id.
HOSTED_ZONES: dict[str, dict[str, Any]] = {
    "Z0SERVESTACKEXAMPLE0": {"name": "servestack.example.com", "private": False},
}


def _hosted_zone(zone_id: str) -> dict[str, Any]:
    zone = HOSTED_ZONES.get(zone_id.removeprefix("/hostedzone/"))
    if zone is None:
        raise CloudError(f"NoSuchHostedZone: No hosted zone found with ID: {zone_id}")
    return zone


def _record(args: MockResourceArgs, ctx: FakeContext) -> tuple[str, dict[str, Any]]:
    """A record set, refused as Route 53 refuses a change batch: outside its zone, or a CNAME at the apex."""
    zone_id, kind = str(args.inputs.get("zoneId")), str(args.inputs.get("type"))
    zone = str(_hosted_zone(zone_id)["name"])
    name = str(args.inputs.get("name")).rstrip(".").lower()
    if name != zone and not name.endswith(f".{zone}"):
        raise CloudError(f"InvalidChangeBatch: [RRSet with DNS name {name}. is not permitted in zone {zone}.]")
    if name == zone and kind == "CNAME":
        raise CloudError(f"InvalidChangeBatch: [RRSet of type CNAME with DNS name {name}. is not permitted at apex in "
                         f"zone {zone}.]")
    return f"{zone_id}_{name}_{kind}", {"fqdn": name}


# The add-on builds EKS publishes per Kubernetes minor, as the EKS user guide's tables list them (what
# `aws eks describe-addon-versions` answers); an Addon asking for any other build is refused, as EKS does.
EKS_ADDON_BUILDS: dict[str, dict[str, tuple[str, ...]]] = {
    "1.34": {"vpc-cni": ("v1.21.1-eksbuild.7",), "kube-proxy": ("v1.34.6-eksbuild.2",),
             "coredns": ("v1.13.2-eksbuild.7",), "metrics-server": ("v0.8.1-eksbuild.5",),
             "aws-ebs-csi-driver": ("v1.65.0-eksbuild.1", "v1.66.0-eksbuild.1")},
    "1.35": {"vpc-cni": ("v1.21.1-eksbuild.7",), "kube-proxy": ("v1.35.3-eksbuild.2",),
             "coredns": ("v1.14.2-eksbuild.4",), "metrics-server": ("v0.8.1-eksbuild.5",),
             "aws-ebs-csi-driver": ("v1.65.0-eksbuild.1", "v1.66.0-eksbuild.1")},
}


RESOURCES: dict[str, ResourceFake] = {
    "aws:ec2/vpc:Vpc": _prefixed("vpc", "ec2", "vpc"),
    "aws:ec2/subnet:Subnet": _prefixed("subnet", "ec2", "subnet"),
    "aws:ec2/internetGateway:InternetGateway": _prefixed("igw", "ec2", "internet-gateway"),
    "aws:ec2/natGateway:NatGateway": _prefixed("nat"),
    "aws:ec2/routeTable:RouteTable": _prefixed("rtb", "ec2", "route-table"),
    "aws:ec2/route:Route": _prefixed("r-rtb"),
    "aws:ec2/routeTableAssociation:RouteTableAssociation": _prefixed("rtbassoc"),
    "aws:ec2/eip:Eip": _eip,
    "aws:ec2/flowLog:FlowLog": _prefixed("fl", "ec2", "vpc-flow-log"),
    "aws:ec2/vpcEndpoint:VpcEndpoint": _prefixed("vpce", "ec2", "vpc-endpoint"),
    "aws:ec2/securityGroup:SecurityGroup": _security_group,
    "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup": _security_group,
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": _prefixed("sgr", "ec2", "security-group-rule"),
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": _prefixed("sgr", "ec2", "security-group-rule"),
    "aws:ec2/launchTemplate:LaunchTemplate": _launch_template,
    "aws:iam/role:Role": _role,
    "aws:iam/rolePolicy:RolePolicy": _role_policy,
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": _attachment,
    "aws:iam/openIdConnectProvider:OpenIdConnectProvider": _oidc_provider,
    "aws:kms/key:Key": _kms_key,
    "aws:cloudwatch/logGroup:LogGroup": _log_group,
    "aws:eks/cluster:Cluster": _cluster,
    "aws:eks/nodeGroup:NodeGroup": _node_group,
    "aws:eks/addon:Addon": _addon,
    "aws:ecr/repository:Repository": _repository,
    "aws:s3/bucket:Bucket": _bucket,
    "aws:route53/record:Record": _record,
}


_COMPASS = {"north": "n", "south": "s", "east": "e", "west": "w", "central": "c", "northeast": "ne",
            "northwest": "nw", "southeast": "se", "southwest": "sw"}


def zone_ids(region: str) -> dict[str, str]:
    """The placeholder account's zone names and their zone IDs. Every account maps names to IDs its own
    way; in this one the region's first zone name is its third zone ID (in us-east-1: us-east-1a is
    use1-az3, where EKS places no control plane)."""
    area, *direction, number = region.split("-")
    prefix = area + "".join(_COMPASS.get(d, d[:1]) for d in direction) + number
    letters = "abcdef"
    return {f"{region}{c}": f"{prefix}-az{(i + 2) % len(letters) + 1}" for i, c in enumerate(letters)}


def _availability_zones(args: MockCallArgs, ctx: FakeContext) -> dict[str, Any]:
    region = _region(ctx)
    excluded = set(args.args.get("excludeZoneIds") or ())
    zones = {name: zone_id for name, zone_id in zone_ids(region).items() if zone_id not in excluded}
    return {"id": region, "names": list(zones), "zoneIds": list(zones.values()), "groupNames": [region],
            "state": "available"}


def _caller_identity(args: MockCallArgs, ctx: FakeContext) -> dict[str, Any]:
    """The deployer: a role assumed through SSO, as most people and CI runners deploy."""
    return {"accountId": ACCOUNT, "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/{DEPLOYER_ROLE}/deployer",
            "userId": f"AROA{ctx.hex('deployer', length=17).upper()}:deployer", "id": ACCOUNT}


def _session_context(args: MockCallArgs, ctx: FakeContext) -> dict[str, Any]:
    """An assumed role's session resolves to its role (the ARN of anything else is its own issuer)."""
    arn = str(args.args["arn"])
    issuer = arn
    if ":assumed-role/" in arn:
        account = arn.split(":")[4]
        role = arn.split(":assumed-role/", 1)[1].split("/")[0]
        issuer = f"arn:aws:iam::{account}:role/{role}"
    return {"arn": arn, "issuerArn": issuer, "issuerName": issuer.rsplit("/", 1)[-1], "id": arn,
            "issuerId": f"AROA{ctx.hex('issuer', issuer, length=17).upper()}", "sessionName": arn.rsplit("/", 1)[-1]}


# Zones (by zone ID) that offer no GPU instance types: use1-az5 predates the G and P generations.
ZONE_IDS_WITHOUT_GPUS = ("use1-az5",)


def _instance_type_offerings(args: MockCallArgs, ctx: FakeContext) -> dict[str, Any]:
    wanted = [v for f in args.args.get("filters") or [] if f.get("name") == "instance-type" for v in f["values"]]
    gpu = any(t.split(".")[0][:1] in ("g", "p") for t in wanted)
    locations = [name for name, zone_id in zone_ids(_region(ctx)).items()
                 if not (gpu and zone_id in ZONE_IDS_WITHOUT_GPUS)]
    return {"id": _region(ctx), "locationType": "availability-zone", "locations": locations,
            "instanceTypes": [t for t in wanted for _ in locations],
            "locationTypes": ["availability-zone"] * len(locations)}


def _zone(args: MockCallArgs, ctx: FakeContext) -> dict[str, Any]:
    """A hosted zone by id, as the provider reads it: the name without its trailing dot."""
    zone_id = str(args.args.get("zoneId"))
    zone = _hosted_zone(zone_id)
    servers = [f"ns-{n}.awsdns-{n % 64:02d}.{tld}" for n, tld in ((412, "com"), (1307, "org"), (671, "net"),
                                                                   (1802, "co.uk"))]
    return {"id": zone_id, "zoneId": zone_id, "name": zone["name"], "privateZone": zone["private"],
            "arn": f"arn:aws:route53:::hostedzone/{zone_id}", "callerReference": f"servestack-{zone_id}",
            "comment": "", "nameServers": servers, "primaryNameServer": servers[0], "resourceRecordSetCount": 2,
            "tags": {}, "linkedServiceDescription": "", "linkedServicePrincipal": ""}


CALLS: dict[str, CallFake] = {
    "aws:route53/getZone:getZone": _zone,
    "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings": _instance_type_offerings,
    "aws:index/getCallerIdentity:getCallerIdentity": _caller_identity,
    "aws:iam/getSessionContext:getSessionContext": _session_context,
    "aws:index/getAvailabilityZones:getAvailabilityZones": _availability_zones,
}
