"""The aws-dev and aws-prod offline plans: network, firewall, EKS, node groups, registry, bucket, IAM, the
serving deployment and the gateway on top, its certificate through Route 53; plus the AWS config checks."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from infra.clouds.aws.dns import _record_name
from infra.clouds.aws.kube import kubeconfig
from infra.clouds.aws.network import EKS_UNSUPPORTED_ZONE_IDS, gpu_zones
from infra.config import ConfigError, parse_config
from servestack.check import check_plan
from servestack.offline.fakes.aws import EKS_ADDON_BUILDS, HOSTED_ZONES, ZONE_IDS_WITHOUT_GPUS, zone_ids
from servestack.offline.plan import STACKS_DIR, PlanError, plan_in_subprocess
from servestack.offline.schemas import validate_plan
from tests.infra.plans import inputs, one, resources, stack_variant

STACKS = ("aws-dev", "aws-prod")
NS = "servestack"
VPC = "aws:ec2/vpc:Vpc"
SUBNET = "aws:ec2/subnet:Subnet"
SG = "aws:ec2/securityGroup:SecurityGroup"
DEFAULT_SG = "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
CLUSTER = "aws:eks/cluster:Cluster"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
HELM = "kubernetes:helm.sh/v3:Release"
SERVICE = "kubernetes:core/v1:Service"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
ENVOY_PROXY = "kubernetes:gateway.envoyproxy.io/v1alpha1:EnvoyProxy"
ISSUER = "kubernetes:cert-manager.io/v1:ClusterIssuer"
RECORD = "aws:route53/record:Record"
LB = "service.beta.kubernetes.io/aws-load-balancer"
ZONE = "Z0SERVESTACKEXAMPLE0"
NLB_NAME = r"k8s-envoygat-servesta-[0-9a-f]{10}\.elb\.us-east-1\.amazonaws\.com"


@pytest.fixture(scope="module", params=STACKS)
def plan(request: pytest.FixtureRequest, stack_plan: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    return stack_plan(request.param)


@pytest.fixture(scope="module")
def dev(stack_plan: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    return stack_plan("aws-dev")


@pytest.fixture(scope="module")
def prod(stack_plan: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    return stack_plan("aws-prod")


def _stack_config(stack: str) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((STACKS_DIR / f"Pulumi.{stack}.yaml").read_text())["config"]
    return config


def _by_urn(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["urn"]: r for r in plan["resources"]}


def _cluster_name(plan: dict[str, Any]) -> str:
    """The EKS cluster's name: the stack's name and a suffix of this life of the stack."""
    name: str = inputs(plan, CLUSTER)["name"]
    assert re.fullmatch(rf"servestack-{plan['stack']}-[a-z0-9]{{6}}", name), name
    return name


def _named(plan: dict[str, Any], type_token: str, fragment: str) -> list[dict[str, Any]]:
    return [r for r in resources(plan, type_token) if fragment in r["name"]]


# --- network ---------------------------------------------------------------------------------------


def test_vpc_spans_the_configured_zones_with_private_and_public_subnets(plan: dict[str, Any]) -> None:
    aws = _stack_config(plan["stack"])["servestack:aws"]
    zones = aws["availabilityZones"]
    vpc = inputs(plan, VPC)
    assert vpc["cidrBlock"] == aws["vpcCidr"] and vpc["enableDnsHostnames"] is True
    private = _named(plan, SUBNET, "private")
    public = _named(plan, SUBNET, "public")
    assert len(private) == len(public) == zones
    assert len({s["inputs"]["availabilityZone"] for s in private}) == zones
    network = ipaddress.ip_network(aws["vpcCidr"])
    blocks = [ipaddress.ip_network(s["inputs"]["cidrBlock"]) for s in private + public]
    assert all(b.subnet_of(network) for b in blocks)  # type: ignore[arg-type]
    assert not any(a.overlaps(b) for i, a in enumerate(blocks) for b in blocks[i + 1:])
    cluster_tag = "kubernetes.io/cluster/" + _cluster_name(plan)
    for subnet in private:
        assert subnet["inputs"]["tags"]["kubernetes.io/role/internal-elb"] == "1"
        assert subnet["inputs"]["tags"][cluster_tag] == "shared"
    for subnet in public:
        assert subnet["inputs"]["tags"]["kubernetes.io/role/elb"] == "1"
    # Nothing gets a public IP at launch, in any subnet.
    assert all(s["inputs"]["mapPublicIpOnLaunch"] is False for s in private + public)


def test_subnets_avoid_the_zones_where_eks_places_no_control_plane(plan: dict[str, Any]) -> None:
    # Zone names map to zone IDs per account; the fake account's us-east-1a is use1-az3, which EKS refuses.
    ids = zone_ids("us-east-1")
    zones = {s["inputs"]["availabilityZone"] for s in resources(plan, SUBNET)}
    assert "us-east-1a" not in zones
    assert not {ids[z] for z in zones} & set(EKS_UNSUPPORTED_ZONE_IDS)


def test_subnets_go_only_to_zones_that_offer_the_gpu(plan: dict[str, Any]) -> None:
    # In the fake account us-east-1c is use1-az5, which offers no G or P instances.
    ids = zone_ids("us-east-1")
    zones = {s["inputs"]["availabilityZone"] for s in resources(plan, SUBNET)}
    assert not {ids[z] for z in zones} & set(ZONE_IDS_WITHOUT_GPUS)
    assert sorted(zones) == ["us-east-1b", "us-east-1d", "us-east-1e"][:len(zones)]
    # Chosen once: a zone that starts offering the GPU later must not move (and replace) a subnet.
    assert all(s["ignoreChanges"] == ["availabilityZone"] for s in resources(plan, SUBNET))


def test_too_few_zones_with_the_gpu_stop_the_program_by_name() -> None:
    with pytest.raises(ValueError) as error:
        gpu_zones(["us-east-1b", "us-east-1c"], ["us-east-1b"], "g6.xlarge", 2)
    assert str(error.value) == ("servestack:aws.availabilityZones: 2 zones wanted, but g6.xlarge is offered in 1 of "
                                "the region's zones that EKS supports (us-east-1b); choose another region or "
                                "instance type, or fewer zones")


def test_s3_traffic_takes_a_gateway_endpoint_not_nat(plan: dict[str, Any]) -> None:
    endpoint = one(plan, "aws:ec2/vpcEndpoint:VpcEndpoint")
    assert endpoint["inputs"]["serviceName"] == "com.amazonaws.us-east-1.s3"
    assert endpoint["inputs"]["vpcEndpointType"] == "Gateway"
    private_tables = {r["urn"] for r in resources(plan, "aws:ec2/routeTable:RouteTable") if "private" in r["name"]}
    assert private_tables and private_tables <= set(endpoint["propertyDependencies"]["routeTableIds"])


def test_flow_logs_may_be_written_only_for_this_account(prod: dict[str, Any]) -> None:
    (statement,) = json.loads(inputs(prod, ROLE, "aws-network-flow-logs-role")["assumeRolePolicy"])["Statement"]
    assert statement["Condition"] == {
        "StringEquals": {"aws:SourceAccount": "123456789012"},
        "ArnLike": {"aws:SourceArn": "arn:aws:ec2:us-east-1:123456789012:vpc-flow-log/*"}}


def test_replaced_models_expire_and_uploads_left_half_way_go(plan: dict[str, Any]) -> None:
    (rule,) = inputs(plan, "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")["rules"]
    assert rule["noncurrentVersionExpiration"] == {"noncurrentDays": 30.0}
    assert rule["abortIncompleteMultipartUpload"] == {"daysAfterInitiation": 7.0}
    assert rule["status"] == "Enabled"


def test_private_subnets_route_to_nat_and_only_public_ones_to_the_internet_gateway(plan: dict[str, Any]) -> None:
    routes = resources(plan, "aws:ec2/route:Route")
    to_igw = [r for r in routes if r["inputs"].get("gatewayId")]
    to_nat = [r for r in routes if r["inputs"].get("natGatewayId")]
    assert [r["name"] for r in to_igw] == ["aws-network-public-default-route"]
    assert len(to_nat) == _stack_config(plan["stack"])["servestack:aws"]["availabilityZones"]
    assert all(r["inputs"]["destinationCidrBlock"] == "0.0.0.0/0" for r in routes)


def test_dev_shares_one_nat_gateway_and_prod_has_one_per_zone_and_flow_logs(dev: dict[str, Any],
                                                                            prod: dict[str, Any]) -> None:
    nat = "aws:ec2/natGateway:NatGateway"
    assert len(resources(dev, nat)) == 1
    assert len(resources(prod, nat)) == 3
    dev_routes = {r["inputs"]["natGatewayId"] for r in resources(dev, "aws:ec2/route:Route")
                  if r["inputs"].get("natGatewayId")}
    prod_routes = {r["inputs"]["natGatewayId"] for r in resources(prod, "aws:ec2/route:Route")
                   if r["inputs"].get("natGatewayId")}
    assert len(dev_routes) == 1 and len(prod_routes) == 3
    assert resources(dev, "aws:ec2/flowLog:FlowLog") == []
    flow = inputs(prod, "aws:ec2/flowLog:FlowLog")
    assert flow["trafficType"] == "ALL" and flow["logDestinationType"] == "cloud-watch-logs"


# --- security groups -------------------------------------------------------------------------------


def _world(cidr: str) -> bool:
    return ipaddress.ip_network(cidr, strict=False).prefixlen == 0


def test_security_groups_are_managed_by_standalone_rules_only(plan: dict[str, Any]) -> None:
    groups = resources(plan, SG) + resources(plan, DEFAULT_SG)
    assert {g["name"] for g in resources(plan, SG)} == {"aws-network-cluster-sg", "aws-network-node-sg",
                                                        "aws-network-lb-sg"}
    for group in groups:
        assert not group["inputs"].get("ingress") and not group["inputs"].get("egress"), group["name"]
    rules = resources(plan, INGRESS) + resources(plan, EGRESS)
    assert rules and all(r["inputs"].get("description") for r in rules)


# What EC2 accepts in a security group's and a rule's description (the narrower set of the two: a rule
# naming a source group may not contain '&'); anything else fails the create with InvalidParameterValue.
EC2_DESCRIPTION = re.compile(r"[a-zA-Z0-9 ._\-:/()#,@\[\]+=;{}!$*]{1,255}")


def test_security_group_and_rule_descriptions_use_only_what_ec2_accepts(plan: dict[str, Any]) -> None:
    described = resources(plan, SG) + resources(plan, INGRESS) + resources(plan, EGRESS)
    bad = [(r["name"], r["inputs"]["description"]) for r in described
           if not EC2_DESCRIPTION.fullmatch(r["inputs"]["description"])]
    assert bad == []


def test_only_the_serving_load_balancer_admits_addresses_from_outside_and_only_on_its_ports(
        plan: dict[str, Any]) -> None:
    """The gateway's listeners, 80 (redirects to HTTPS) and 443, one rule per port and client range."""
    clients = _stack_config(plan["stack"])["servestack:access"]["endpointCidrs"]
    lb_group = one(plan, SG, "aws-network-lb-sg")["urn"]
    by_cidr = [r for r in resources(plan, INGRESS) if r["inputs"].get("cidrIpv4") or r["inputs"].get("cidrIpv6")]
    assert sorted((r["name"], r["inputs"]["cidrIpv4"], r["inputs"]["fromPort"], r["inputs"]["toPort"],
                   r["inputs"]["ipProtocol"]) for r in by_cidr) == sorted(
        (f"aws-network-lb-from-clients-{port}-{i}", client, float(port), float(port), "tcp")
        for port in (80, 443) for i, client in enumerate(clients))
    for rule in by_cidr:
        assert not _world(rule["inputs"]["cidrIpv4"])
        assert lb_group in rule["dependencies"]
    # The first port's rules keep the names they had when the entry had one port: an existing stack's next `up`
    # updates them in place, where new rules beside identical old ones would fail as duplicates.
    assert {r["name"]: r.get("aliases") for r in by_cidr} == {
        f"aws-network-lb-from-clients-{port}-{i}": [f"aws-network-lb-from-clients-{i}"] if port == 80 else None
        for port in (80, 443) for i in range(len(clients))}
    # Every other ingress rule names a source security group: nothing else reaches in by address.
    others = [r for r in resources(plan, INGRESS) if r not in by_cidr]
    assert all(r["inputs"].get("referencedSecurityGroupId") for r in others)
    # No SSH anywhere.
    for rule in resources(plan, INGRESS):
        low, high = rule["inputs"].get("fromPort"), rule["inputs"].get("toPort")
        assert rule["inputs"]["ipProtocol"] == "-1" or not (low <= 22 <= high), rule["name"]


def test_node_group_rules_cover_what_eks_needs(plan: dict[str, Any]) -> None:
    rules = {r["name"]: r["inputs"] for r in resources(plan, INGRESS)}
    # 10251: the metrics-server add-on (the API server calls it for the metrics API the HPA reads); 6443: KEDA's
    # metrics API server (the external metrics of the queue).
    for port in (443, 6443, 9443, 10250, 10251):
        assert rules[f"aws-network-nodes-from-cluster-{port}"]["fromPort"] == port
    assert rules["aws-network-cluster-from-nodes-https"]["fromPort"] == 443
    assert rules["aws-network-nodes-from-nodes"]["ipProtocol"] == "-1"
    assert (rules["aws-network-nodes-from-lb"]["fromPort"], rules["aws-network-nodes-from-lb"]["toPort"]) == (
        30000.0, 32767.0)


# --- EKS -------------------------------------------------------------------------------------------


def test_dev_api_endpoint_is_public_only_to_the_operators(dev: dict[str, Any]) -> None:
    vpc = inputs(dev, CLUSTER)["vpcConfig"]
    assert vpc["endpointPrivateAccess"] is True and vpc["endpointPublicAccess"] is True
    assert vpc["publicAccessCidrs"] == ["198.51.100.0/24"]


def test_prod_api_endpoint_is_public_only_to_the_deployer_and_operators(prod: dict[str, Any]) -> None:
    """The VPC does not exist before the first `up`: the deployer comes in through the public endpoint,
    limited to its CIDR blocks, while nodes use the private one."""
    vpc = inputs(prod, CLUSTER)["vpcConfig"]
    assert vpc["endpointPrivateAccess"] is True and vpc["endpointPublicAccess"] is True
    assert vpc["publicAccessCidrs"] == ["198.51.100.0/24"]


def test_cluster_encrypts_secrets_logs_and_uses_access_entries(plan: dict[str, Any]) -> None:
    cluster = inputs(plan, CLUSTER)
    assert cluster["name"] == _cluster_name(plan) and cluster["version"] == "1.35"
    # Admins are access entries the plan shows; EKS adds no invisible one for the creator.
    assert cluster["accessConfig"] == {"authenticationMode": "API", "bootstrapClusterCreatorAdminPermissions": False}
    assert cluster["encryptionConfig"]["resources"] == ["secrets"]
    key = inputs(plan, "aws:kms/key:Key")
    assert key["enableKeyRotation"] is True
    key_arn = cluster["encryptionConfig"]["provider"]["keyArn"]
    assert key_arn.startswith("arn:aws:kms:")
    (key_use,) = json.loads(inputs(plan, ROLE_POLICY, "aws-eks-cluster-secrets-key")["policy"])["Statement"]
    assert key_use["Resource"] == key_arn and "kms:Decrypt" in key_use["Action"]
    assert set(cluster["enabledClusterLogTypes"]) == {"api", "audit", "authenticator", "controllerManager",
                                                      "scheduler"}
    assert cluster["bootstrapSelfManagedAddons"] is False
    private_ids = {s["urn"] for s in _named(plan, SUBNET, "private")}
    assert len(cluster["vpcConfig"]["subnetIds"]) == len(private_ids)
    oidc = inputs(plan, "aws:iam/openIdConnectProvider:OpenIdConnectProvider")
    assert oidc["clientIdLists"] == ["sts.amazonaws.com"] and oidc["url"].startswith("https://oidc.eks.")


def test_core_addons_are_pinned_and_coredns_waits_for_nodes(plan: dict[str, Any]) -> None:
    addons = {r["inputs"]["addonName"]: r for r in resources(plan, "aws:eks/addon:Addon")}
    assert set(addons) == {"vpc-cni", "kube-proxy", "coredns", "metrics-server", "aws-ebs-csi-driver"}
    assert all(a["inputs"]["addonVersion"].startswith("v") and "eksbuild" in a["inputs"]["addonVersion"]
               for a in addons.values())
    # Every add-on is pinned to a build EKS publishes for 1.35 (no build decided on the day of `up`).
    assert addons["kube-proxy"]["inputs"]["addonVersion"] == "v1.35.3-eksbuild.2"
    assert addons["coredns"]["inputs"]["addonVersion"] == "v1.14.2-eksbuild.4"
    assert addons["vpc-cni"]["inputs"]["addonVersion"] == "v1.21.1-eksbuild.7"
    assert addons["aws-ebs-csi-driver"]["inputs"]["addonVersion"] == "v1.66.0-eksbuild.1"
    for name, addon in addons.items():
        assert addon["inputs"]["addonVersion"] in EKS_ADDON_BUILDS["1.35"][name]
    assert json.loads(addons["vpc-cni"]["inputs"]["configurationValues"]) == {"enableNetworkPolicy": "true"}
    assert addons["vpc-cni"]["inputs"]["serviceAccountRoleArn"].startswith("arn:aws:iam::")
    # aws-node runs with the IRSA role: the CNI policy must be on it before the add-on starts.
    assert one(plan, ATTACHMENT, "aws-eks-vpc-cni-policy")["urn"] in addons["vpc-cni"]["dependencies"]
    system = one(plan, NODE_GROUP, "aws-eks-system-nodes")["urn"]
    assert system in addons["coredns"]["dependencies"]
    assert system in addons["metrics-server"]["dependencies"]
    for name in ("aws-eks-system-nodes", "aws-eks-gpu-nodes"):
        deps = one(plan, NODE_GROUP, name)["dependencies"]
        assert addons["vpc-cni"]["urn"] in deps and addons["kube-proxy"]["urn"] in deps


def test_the_ebs_csi_driver_provisions_volumes_as_its_own_role(plan: dict[str, Any]) -> None:
    # EKS provisions no volume without the driver (and clusters made on 1.30+ have no default class).
    addon = one(plan, "aws:eks/addon:Addon", "aws-eks-aws-ebs-csi-driver")
    role = one(plan, ROLE, "aws-eks-ebs-csi-role")
    assert addon["inputs"]["addonName"] == "aws-ebs-csi-driver"
    assert addon["inputs"]["addonVersion"] in EKS_ADDON_BUILDS["1.35"]["aws-ebs-csi-driver"]
    assert re.fullmatch(r"arn:aws:iam::123456789012:role/aws-eks-ebs-csi-role-[0-9a-f]{7}",
                        addon["inputs"]["serviceAccountRoleArn"])
    (statement,) = _trust(plan, "aws-eks-ebs-csi-role")["Statement"]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Principal"]["Federated"].startswith("arn:aws:iam::123456789012:oidc-provider/oidc.eks.")
    assert sorted(statement["Condition"]["StringEquals"].values()) == [
        "sts.amazonaws.com", "system:serviceaccount:kube-system:ebs-csi-controller-sa"]
    attached = [a for a in resources(plan, ATTACHMENT) if role["urn"] in a["dependencies"]]
    assert [a["inputs"]["policyArn"] for a in attached] == [
        "arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicyV2"]
    assert not [p for p in resources(plan, ROLE_POLICY) if role["urn"] in p["dependencies"]]
    # The policy before the controller starts (and after it stops), the nodes before its pods.
    assert attached[0]["urn"] in addon["dependencies"]
    assert one(plan, NODE_GROUP, "aws-eks-system-nodes")["urn"] in addon["dependencies"]


def test_volumes_are_encrypted_gp3_made_where_their_pod_runs_and_deleted_with_their_claim(
        plan: dict[str, Any]) -> None:
    storage_class = one(plan, "kubernetes:storage.k8s.io/v1:StorageClass", "aws-gp3")
    spec = storage_class["inputs"]
    assert spec["metadata"] == {"name": "servestack-gp3"}
    assert spec["provisioner"] == "ebs.csi.aws.com"
    assert spec["parameters"] == {"type": "gp3", "encrypted": "true", "csi.storage.k8s.io/fstype": "ext4"}
    # In the zone of the pod's node (an EBS volume attaches only in its own zone), growable, gone with its claim.
    assert spec["volumeBindingMode"] == "WaitForFirstConsumer"
    assert spec["allowVolumeExpansion"] is True and spec["reclaimPolicy"] == "Delete"
    # Not the default class: the stack's volumes name it.
    assert "annotations" not in spec["metadata"]
    # On destroy the driver outlives the class, and with it every volume of the class.
    assert one(plan, "aws:eks/addon:Addon", "aws-eks-aws-ebs-csi-driver")["urn"] in storage_class["dependencies"]


def test_prometheus_gets_its_disk_from_the_gp3_class_which_outlives_its_claim(prod: dict[str, Any]) -> None:
    release = one(prod, HELM, "servestack-monitoring-kube-prometheus-stack")
    spec = release["inputs"]["values"]["prometheus"]["prometheusSpec"]
    assert spec["storageSpec"]["volumeClaimTemplate"]["spec"] == {
        "storageClassName": "servestack-gp3", "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "50Gi"}}}
    assert spec["retentionSize"] == "42GB"
    # Created after the driver and the class, deleted (with the namespace and its claim) before them.
    for name, token in (("aws-eks-aws-ebs-csi-driver", "aws:eks/addon:Addon"),
                        ("aws-gp3", "kubernetes:storage.k8s.io/v1:StorageClass")):
        assert one(prod, token, name)["urn"] in release["dependencies"], name
    namespace = one(prod, "kubernetes:core/v1:Namespace", "servestack-monitoring-namespace")
    assert namespace["urn"] in release["dependencies"]
    assert one(prod, "aws:eks/addon:Addon", "aws-eks-aws-ebs-csi-driver")["urn"] in namespace["dependencies"]


# --- node groups -----------------------------------------------------------------------------------


def test_nodes_sit_in_private_subnets_without_public_ips(plan: dict[str, Any]) -> None:
    private = {s["urn"] for s in _named(plan, SUBNET, "private")}
    public = {s["urn"] for s in _named(plan, SUBNET, "public")}
    for group in resources(plan, NODE_GROUP):
        deps = set(group["dependencies"])
        assert private <= deps and not public & deps, group["name"]
        assert len(group["inputs"]["subnetIds"]) == len(private)
        assert "remoteAccess" not in group["inputs"]  # no SSH key, no SSH rule
    for template in resources(plan, LAUNCH_TEMPLATE):
        for interface in template["inputs"].get("networkInterfaces") or []:
            assert interface.get("associatePublicIpAddress") in (None, "false", False)


def test_launch_templates_require_imdsv2_with_one_hop(plan: dict[str, Any]) -> None:
    templates = resources(plan, LAUNCH_TEMPLATE)
    assert len(templates) == 2
    for template in templates:
        options = template["inputs"]["metadataOptions"]
        assert options == {"httpEndpoint": "enabled", "httpTokens": "required", "httpPutResponseHopLimit": 1.0}
        disk = template["inputs"]["blockDeviceMappings"][0]["ebs"]
        assert disk["encrypted"] == "true" and disk["volumeType"] == "gp3"
    by_urn = _by_urn(plan)
    for group in resources(plan, NODE_GROUP):
        template = [by_urn[d] for d in group["dependencies"] if by_urn[d]["type"] == LAUNCH_TEMPLATE]
        assert len(template) == 1 and group["inputs"]["launchTemplate"]["id"].startswith("lt-")


def test_gpu_group_is_tainted_labelled_and_scaled_by_config(plan: dict[str, Any]) -> None:
    config = _stack_config(plan["stack"])
    gpu = config["servestack:gpu"]
    group = one(plan, NODE_GROUP, "aws-eks-gpu-nodes")
    node = group["inputs"]
    assert node["taints"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"}]
    assert node["labels"] == {"servestack.io/pool": "gpu", "k8s.amazonaws.com/accelerator": gpu["type"]}
    assert node["instanceTypes"] == [gpu["machineType"]]
    assert node["amiType"] == config["servestack:aws"]["gpuAmiType"]
    assert node["capacityType"] == ("SPOT" if gpu["spot"] else "ON_DEMAND")
    scaling = node["scalingConfig"]
    assert (scaling["minSize"], scaling["maxSize"], scaling["desiredSize"]) == (
        gpu["minNodes"], gpu["maxNodes"], gpu["minNodes"])
    # After creation a command owns the bounds (test_eks_scaling_script), the autoscaler the desired size.
    assert group["ignoreChanges"] == ["scalingConfig"]
    assert node["version"] == "1.35"  # the control plane's minor: an upgrade rolls the nodes too
    gpu_template = one(plan, LAUNCH_TEMPLATE, "aws-eks-gpu-template")["inputs"]
    assert gpu_template["blockDeviceMappings"][0]["ebs"]["volumeSize"] == gpu["diskGb"]
    system = one(plan, NODE_GROUP, "aws-eks-system-nodes")
    assert system["inputs"]["capacityType"] == "ON_DEMAND" and "taints" not in system["inputs"]
    assert system["ignoreChanges"] == ["scalingConfig"]
    aws = config["servestack:aws"]
    for pool, bounds in (("gpu", (gpu["minNodes"], gpu["maxNodes"])),
                         ("system", (aws["systemMinNodes"], aws["systemMaxNodes"]))):
        command = one(plan, "command:local:Command", f"aws-eks-{pool}-scaling")
        assert f"min={bounds[0]}; max={bounds[1]}" in command["inputs"]["create"]
        assert one(plan, NODE_GROUP, f"aws-eks-{pool}-nodes")["urn"] in command["dependencies"]


def test_dev_gpu_group_scales_from_zero_on_spot_and_prod_from_one_on_demand(dev: dict[str, Any],
                                                                            prod: dict[str, Any]) -> None:
    dev_group, prod_group = inputs(dev, NODE_GROUP, "aws-eks-gpu-nodes"), inputs(prod, NODE_GROUP,
                                                                                    "aws-eks-gpu-nodes")
    assert (dev_group["scalingConfig"]["minSize"], dev_group["scalingConfig"]["maxSize"]) == (0.0, 2.0)
    assert dev_group["capacityType"] == "SPOT" and dev_group["instanceTypes"] == ["g6.xlarge"]
    assert (prod_group["scalingConfig"]["minSize"], prod_group["scalingConfig"]["maxSize"]) == (1.0, 8.0)
    assert prod_group["capacityType"] == "ON_DEMAND"


def test_empty_gpu_group_is_described_to_the_autoscaler(plan: dict[str, Any]) -> None:
    tags = {t["inputs"]["tag"]["key"]: t["inputs"]["tag"] for t in resources(plan, "aws:autoscaling/tag:Tag")}
    template = "k8s.io/cluster-autoscaler/node-template"
    assert tags[f"{template}/resources/nvidia.com/gpu"]["value"] == "1"
    assert tags[f"{template}/taint/nvidia.com/gpu"]["value"] == "present:NoSchedule"
    assert tags[f"{template}/label/servestack.io/pool"]["value"] == "gpu"
    assert all(t["propagateAtLaunch"] is False for t in tags.values())
    asg = {t["inputs"]["autoscalingGroupName"] for t in resources(plan, "aws:autoscaling/tag:Tag")}
    assert len(asg) == 1 and next(iter(asg)).startswith("eks-")


def test_cluster_autoscaler_is_pinned_discovers_the_cluster_and_may_scale_only_its_groups(
        plan: dict[str, Any]) -> None:
    release = inputs(plan, HELM, "aws-cluster-autoscaler")
    assert release["chart"] == "cluster-autoscaler" and release["version"] == "9.59.0"
    assert release["repositoryOpts"]["repo"] == "https://kubernetes.github.io/autoscaler"
    values = release["values"]
    cluster = _cluster_name(plan)
    assert values["autoDiscovery"]["clusterName"] == cluster
    assert values["image"]["tag"] == "v1.35.0"
    role_arn = values["rbac"]["serviceAccount"]["annotations"]["eks.amazonaws.com/role-arn"]
    role_name = role_arn.rsplit("/", 1)[-1]
    policy = json.loads(inputs(plan, ROLE_POLICY, "aws-cluster-autoscaler-policy")["policy"])
    assert inputs(plan, ROLE_POLICY, "aws-cluster-autoscaler-policy")["role"] == role_name
    scale = next(s for s in policy["Statement"] if "autoscaling:SetDesiredCapacity" in s["Action"])
    assert scale["Condition"] == {"StringEquals": {f"aws:ResourceTag/k8s.io/cluster-autoscaler/{cluster}": "owned"}}
    describe_groups = next(s for s in policy["Statement"] if s["Action"] == "eks:DescribeNodegroup")
    assert describe_groups["Resource"] == f"arn:aws:eks:us-east-1:123456789012:nodegroup/{cluster}/*/*"


# --- IAM -------------------------------------------------------------------------------------------


def _trust(plan: dict[str, Any], role: str) -> dict[str, Any]:
    trust: dict[str, Any] = json.loads(inputs(plan, ROLE, role)["assumeRolePolicy"])
    return trust


def test_serving_role_trusts_exactly_the_serving_service_account(plan: dict[str, Any]) -> None:
    statement = _trust(plan, "aws-serving-role")["Statement"]
    assert len(statement) == 1
    issuer = inputs(plan, "aws:iam/openIdConnectProvider:OpenIdConnectProvider")["url"].removeprefix("https://")
    assert statement[0]["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement[0]["Principal"] == {"Federated": f"arn:aws:iam::123456789012:oidc-provider/{issuer}"}
    assert statement[0]["Condition"] == {"StringEquals": {
        f"{issuer}:sub": f"system:serviceaccount:{NS}:servestack", f"{issuer}:aud": "sts.amazonaws.com"}}


def test_serving_role_may_read_the_model_bucket_and_nothing_else(plan: dict[str, Any]) -> None:
    bucket = one(plan, "aws:s3/bucket:Bucket")
    role = one(plan, ROLE, "aws-serving-role")
    policies = [p for p in resources(plan, ROLE_POLICY) if role["urn"] in p["dependencies"]]
    assert [p["name"] for p in policies] == ["aws-serving-read-models"]
    assert not [a for a in resources(plan, ATTACHMENT) if role["urn"] in a["dependencies"]]
    document = json.loads(policies[0]["inputs"]["policy"])
    actions = {a for s in document["Statement"] for a in s["Action"]}
    assert actions == {"s3:ListBucket", "s3:GetBucketLocation", "s3:GetObject", "s3:GetObjectVersion"}
    arns = {s["Resource"] for s in document["Statement"]}
    assert all(s["Effect"] == "Allow" for s in document["Statement"])
    (bucket_arn,) = {a.removesuffix("/*") for a in arns}
    assert bucket_arn.startswith("arn:aws:s3:::") and bucket["name"] in bucket_arn


def test_node_role_has_only_the_managed_policies_nodes_need(plan: dict[str, Any]) -> None:
    role = one(plan, ROLE, "aws-eks-node-role")
    assert _trust(plan, "aws-eks-node-role")["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    attached = {a["inputs"]["policyArn"] for a in resources(plan, ATTACHMENT) if role["urn"] in a["dependencies"]}
    assert attached == {"arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
                        "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryPullOnly"}
    assert not [p for p in resources(plan, ROLE_POLICY) if role["urn"] in p["dependencies"]]


def test_the_serving_autoscaler_has_a_metrics_api(plan: dict[str, Any]) -> None:
    # EKS runs no metrics-server of its own: without the add-on an HPA's CPU target never reads a value. With
    # monitoring (prod), KEDA's HPA reads KEDA's external metrics API, which the control plane reaches on 6443.
    if resources(plan, "kubernetes:keda.sh/v1alpha1:ScaledObject"):
        rule = inputs(plan, INGRESS, "aws-network-nodes-from-cluster-6443")
        assert (rule["fromPort"], rule["toPort"]) == (6443.0, 6443.0)
    else:
        hpa = inputs(plan, "kubernetes:autoscaling/v2:HorizontalPodAutoscaler")
        assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource"]
    metrics_server = one(plan, "aws:eks/addon:Addon", "aws-eks-metrics-server")
    assert metrics_server["inputs"]["addonVersion"] == "v0.8.1-eksbuild.5"
    assert metrics_server["urn"] in one(plan, "kubernetes:core/v1:Namespace", "servestack-namespace")["dependencies"]
    # The add-on listens on 10251; the control plane (aggregated API) must reach it on the nodes.
    rule = inputs(plan, INGRESS, "aws-network-nodes-from-cluster-10251")
    assert (rule["fromPort"], rule["toPort"]) == (10251.0, 10251.0)


def test_pods_start_only_once_their_roles_have_their_permissions(plan: dict[str, Any]) -> None:
    for release, policy in (("aws-cluster-autoscaler", "aws-cluster-autoscaler-policy"),
                            ("aws-lb-controller", "aws-lb-controller-policy")):
        assert one(plan, ROLE_POLICY, policy)["urn"] in one(plan, HELM, release)["dependencies"], release
    # The serving objects wait for the platform's `ready`, which holds the bucket read policy.
    namespace = one(plan, "kubernetes:core/v1:Namespace", "servestack-namespace")
    assert one(plan, ROLE_POLICY, "aws-serving-read-models")["urn"] in namespace["dependencies"]


def test_load_balancer_controller_may_tag_the_listeners_it_creates(plan: dict[str, Any]) -> None:
    statements = json.loads(inputs(plan, ROLE_POLICY, "aws-lb-controller-policy")["policy"])["Statement"]
    listener = "arn:aws:elasticloadbalancing:*:*:listener/net/*/*/*"
    # No condition: a listener being created has no tags yet for aws:ResourceTag to match.
    tagging = [s for s in statements if s["Resource"] == listener and "elasticloadbalancing:AddTags" in s["Action"]]
    assert len(tagging) == 1 and "Condition" not in tagging[0]
    # ... and only NLB listeners: no ALB, no listener rules.
    resources_named = {r for s in statements for r in ([s["Resource"]] if isinstance(s["Resource"], str)
                                                       else s["Resource"])}
    assert not [r for r in resources_named if "/app/" in r or "listener-rule" in r]


def test_controllers_trust_only_their_own_service_accounts(plan: dict[str, Any]) -> None:
    for role, account in (("aws-cluster-autoscaler-role", "cluster-autoscaler"),
                          ("aws-lb-controller-role", "aws-load-balancer-controller"),
                          ("aws-eks-vpc-cni-role", "aws-node"),
                          ("aws-eks-ebs-csi-role", "ebs-csi-controller-sa")):
        (condition,) = [s["Condition"]["StringEquals"] for s in _trust(plan, role)["Statement"]]
        subjects = [v for k, v in condition.items() if k.endswith(":sub")]
        assert subjects == [f"system:serviceaccount:kube-system:{account}"]


# --- registry and bucket ---------------------------------------------------------------------------


def test_registry_scans_on_push_with_immutable_tags_encryption_and_lifecycle(plan: dict[str, Any]) -> None:
    repo = inputs(plan, "aws:ecr/repository:Repository")
    assert repo["name"] == f"servestack-{plan['stack']}/servestack-serving"
    assert repo["imageTagMutability"] == "IMMUTABLE"
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
    assert repo["encryptionConfigurations"] == [{"encryptionType": "KMS"}]
    rules = json.loads(inputs(plan, "aws:ecr/lifecyclePolicy:LifecyclePolicy")["policy"])["rules"]
    assert {r["selection"]["tagStatus"] for r in rules} == {"untagged", "any"}
    assert all(r["action"] == {"type": "expire"} for r in rules)


def test_model_bucket_is_private_encrypted_versioned_and_tls_only(plan: dict[str, Any]) -> None:
    block = inputs(plan, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    assert all(block[k] is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls",
                                          "restrictPublicBuckets"))
    sse = inputs(plan, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")
    assert sse["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] in ("AES256", "aws:kms")
    assert inputs(plan, "aws:s3/bucketVersioning:BucketVersioning")["versioningConfiguration"]["status"] == "Enabled"
    policy = json.loads(inputs(plan, "aws:s3/bucketPolicy:BucketPolicy")["policy"])
    (deny,) = policy["Statement"]
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*" and deny["Action"] == "s3:*"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    bucket_arn = deny["Resource"][0]
    assert deny["Resource"] == [bucket_arn, f"{bucket_arn}/*"]


# --- the serving deployment on EKS -----------------------------------------------------------------


def test_serving_deployment_uses_the_stacks_registry_bucket_and_role(plan: dict[str, Any]) -> None:
    config = _stack_config(plan["stack"])
    pod = inputs(plan, DEPLOYMENT, "servestack-deployment")["spec"]["template"]["spec"]
    server = pod["containers"][0]
    registry = f"123456789012.dkr.ecr.us-east-1.amazonaws.com/servestack-{plan['stack']}"
    assert server["image"] == f"{registry}/servestack-serving:{config['servestack:serving']['imageTag']}"
    assert pod["nodeSelector"] == {"servestack.io/pool": "gpu"}
    assert {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"} in \
        pod["tolerations"]
    account = inputs(plan, "kubernetes:core/v1:ServiceAccount")
    role_arn = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert role_arn.startswith("arn:aws:iam::123456789012:role/aws-serving-role")
    if config["servestack:model"]["source"] == "bucket":
        bucket = one(plan, "aws:s3/bucket:Bucket")["name"]
        fetch = pod["initContainers"][0]["command"]
        revision = config["servestack:model"]["revision"]
        assert fetch[3].startswith("s3://") and bucket in fetch[3] and fetch[3].endswith(f"/models/tiny/{revision}")


def _envoy_service(plan: dict[str, Any]) -> dict[str, Any]:
    """The gateway's load balancer Service, as the EnvoyProxy describes it to Envoy Gateway."""
    service: dict[str, Any] = inputs(plan, ENVOY_PROXY)["spec"]["provider"]["kubernetes"]["envoyService"]
    return service


def test_serving_load_balancer_is_an_nlb_behind_our_security_group(plan: dict[str, Any]) -> None:
    service = _envoy_service(plan)
    annotations = service["annotations"]
    assert (service["type"], service["externalTrafficPolicy"]) == ("LoadBalancer", "Local")
    assert annotations[f"{LB}-type"] == "external"
    assert annotations[f"{LB}-nlb-target-type"] == "instance"
    assert annotations[f"{LB}-scheme"] == "internet-facing"
    # The group by id: the gateway's proxy depends on it, so `pulumi destroy` deletes the load balancer first.
    lb_group = one(plan, SG, "aws-network-lb-sg")
    assert annotations[f"{LB}-security-groups"].startswith("sg-")
    assert lb_group["urn"] in one(plan, ENVOY_PROXY)["propertyDependencies"]["spec"]
    assert annotations[f"{LB}-manage-backend-security-group-rules"] == "false"
    # No serving Service of its own: the servers are ClusterIP behind the gateway.
    assert [r["name"] for r in resources(plan, SERVICE) if r["inputs"]["spec"].get("type") == "LoadBalancer"] == []
    controller = inputs(plan, HELM, "aws-lb-controller")
    assert controller["chart"] == "aws-load-balancer-controller" and controller["version"] == "1.13.4"
    assert controller["values"]["vpcId"].startswith("vpc-") and controller["values"]["region"] == "us-east-1"
    assert controller["values"]["enableBackendSecurityGroup"] is False


def test_the_nlb_lets_connections_to_a_terminating_target_finish(plan: dict[str, Any]) -> None:
    """Kubernetes review H1: an unhealthy target's connections are not reset; they drain for as long as a
    terminating Envoy pod drains (the route's 330 s), and so does a deregistered one. Cross-zone balancing keeps a
    zone's address serving while the zone has no ready pod."""
    annotations = _envoy_service(plan)["annotations"]
    assert annotations[f"{LB}-target-group-attributes"] == (
        "target_health_state.unhealthy.connection_termination.enabled=false,"
        "target_health_state.unhealthy.draining_interval_seconds=330,deregistration_delay.timeout_seconds=330")
    assert annotations[f"{LB}-attributes"] == "load_balancing.cross_zone.enabled=true"


def test_the_endpoint_is_the_hostname_and_its_cname_points_at_the_nlb(plan: dict[str, Any]) -> None:
    # The load balancer controller reports an NLB by its DNS name, never by an address: the hostname is a CNAME.
    hostname = _stack_config(plan["stack"])["servestack:gateway"]["hostname"]
    assert plan["outputs"]["endpoint"] == f"https://{hostname}"
    assert re.fullmatch(NLB_NAME, plan["outputs"]["address"])
    record = one(plan, RECORD)
    assert record["inputs"] == {"zoneId": ZONE, "name": hostname, "type": "CNAME", "ttl": 300.0,
                                "records": [plan["outputs"]["address"]]}
    assert one(plan, "kubernetes:gateway.networking.k8s.io/v1:Gateway")["urn"] in record["dependencies"]


def test_cert_manager_may_change_only_the_challenge_record_in_the_zone(plan: dict[str, Any]) -> None:
    hostname = _stack_config(plan["stack"])["servestack:gateway"]["hostname"]
    policy = json.loads(inputs(plan, ROLE_POLICY, "aws-cert-manager-dns01")["policy"])
    assert policy["Statement"] == [
        {"Sid": "ChallengeRecord", "Effect": "Allow", "Action": "route53:ChangeResourceRecordSets",
         "Resource": f"arn:aws:route53:::hostedzone/{ZONE}",
         "Condition": {"ForAllValues:StringEquals": {
             "route53:ChangeResourceRecordSetsNormalizedRecordNames": [f"_acme-challenge.{hostname}"],
             "route53:ChangeResourceRecordSetsRecordTypes": ["TXT"],
             "route53:ChangeResourceRecordSetsActions": ["UPSERT", "DELETE"]}}},
        {"Sid": "ChangeStatus", "Effect": "Allow", "Action": "route53:GetChange",
         "Resource": "arn:aws:route53:::change/*"}]
    (statement,) = _trust(plan, "aws-cert-manager-role")["Statement"]
    subjects = [v for k, v in statement["Condition"]["StringEquals"].items() if k.endswith(":sub")]
    assert subjects == ["system:serviceaccount:cert-manager:cert-manager"]


def test_cert_manager_solves_dns01_in_route53_as_its_role(plan: dict[str, Any]) -> None:
    release = one(plan, HELM, "servestack-cert-manager")
    values = release["inputs"]["values"]
    (annotation,) = values["serviceAccount"]["annotations"].items()
    assert annotation[0] == "eks.amazonaws.com/role-arn"
    assert re.fullmatch(r"arn:aws:iam::123456789012:role/aws-cert-manager-role-[0-9a-f]{7}", annotation[1])
    assert values["podLabels"] == {}
    # The grant is in place before cert-manager first asks for a certificate.
    assert one(plan, ROLE_POLICY, "aws-cert-manager-dns01")["urn"] in release["dependencies"]
    (solver,) = inputs(plan, ISSUER)["spec"]["acme"]["solvers"]
    assert solver["dns01"] == {"route53": {"region": "us-east-1", "hostedZoneID": ZONE}}


def test_the_gateway_and_cert_manager_run_on_the_system_nodes(plan: dict[str, Any]) -> None:
    system = {"servestack.io/pool": "system"}
    pod = inputs(plan, ENVOY_PROXY)["spec"]["provider"]["kubernetes"]["envoyDeployment"]["pod"]
    assert pod["nodeSelector"] == system and "tolerations" not in pod
    values = inputs(plan, HELM, "servestack-cert-manager")["values"]
    assert values["nodeSelector"] == values["webhook"]["nodeSelector"] == system
    assert inputs(plan, HELM, "servestack-envoy-gateway")["values"]["deployment"]["pod"]["nodeSelector"] == system
    # The system group carries exactly that label.
    assert inputs(plan, NODE_GROUP, "aws-eks-system-nodes")["labels"] == system


def test_the_model_upload_check_waits_for_the_revisions_manifest(prod: dict[str, Any]) -> None:
    check = inputs(prod, "command:local:Command", "servestack-wait-for-model")["create"]
    assert re.search(r"s3 ls s3://aws-models-bucket-[0-9a-f]+/models/tiny/r1/manifest\.json", check)


def test_the_image_upload_bakes_the_model_at_its_revision_where_the_image_carries_it(
        dev: dict[str, Any], prod: dict[str, Any]) -> None:
    # aws-dev serves the tiny model from the image, at revision r1: the build the first `up` asks for bakes it.
    build = inputs(dev, "command:local:Command", "servestack-wait-for-image")["create"]
    assert "docker build --build-arg MODEL=tiny --build-arg MODEL_REVISION=r1 -t " in build
    # aws-prod fetches its model from the bucket: an image built with defaults bakes none.
    assert "docker build -t " in inputs(prod, "command:local:Command", "servestack-wait-for-image")["create"]


def test_bottlerocket_brings_its_device_plugin(plan: dict[str, Any]) -> None:
    assert resources(plan, "kubernetes:apps/v1:DaemonSet") == []


def test_kubernetes_provider_uses_a_secret_kubeconfig(plan: dict[str, Any]) -> None:
    provider = one(plan, "pulumi:providers:kubernetes")
    assert provider["inputs"]["kubeconfig"] == "[secret]"
    kube_objects = [r for r in plan["resources"] if r["type"].startswith("kubernetes:")
                    and r["type"] != "pulumi:providers:kubernetes"]
    assert kube_objects and all(r["provider"] == provider["urn"] for r in kube_objects)


def test_kubernetes_objects_validate_against_the_schemas(plan: dict[str, Any]) -> None:
    results = validate_plan(plan, "1.35")
    assert len([r for r in results if not r.skipped]) >= 8
    assert [(r.kind, r.name, r.error) for r in results if r.error] == []


def test_policy_pack_finds_nothing(plan: dict[str, Any]) -> None:
    assert [(v.policy, v.urn, v.message) for v in check_plan(plan)] == []


def test_plan_outputs(plan: dict[str, Any]) -> None:
    outputs = plan["outputs"]
    assert outputs["cloud"] == "aws" and outputs["gpu_machine_type"] == "g6.xlarge"
    # the catalog's g6.xlarge: spot in dev, on-demand in prod
    assert outputs["gpu_node_usd_per_hour"] == {"aws-dev": 0.33, "aws-prod": 0.805}[plan["stack"]]
    assert set(outputs["api_keys"].values()) == {"[secret]"}


# --- variants and bad config -----------------------------------------------------------------------


def _variant(tmp_path_factory: pytest.TempPathFactory, name: str, access: dict[str, Any] | None = None,
             **aws: Any) -> dict[str, Any]:
    stacks = tmp_path_factory.mktemp(name)
    document = yaml.safe_load((STACKS_DIR / "Pulumi.aws-dev.yaml").read_text())
    document["config"]["servestack:aws"].update(aws)
    if access is not None:
        document["config"]["servestack:access"] = access
    (stacks / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump(document))
    return plan_in_subprocess(name, stacks_dir=stacks)


def test_al2023_nodes_get_the_device_plugin(tmp_path_factory: pytest.TempPathFactory) -> None:
    plan = _variant(tmp_path_factory, "aws-al2023", gpuAmiType="AL2023_x86_64_NVIDIA",
                    adminPrincipalArns=["arn:aws:iam::123456789012:role/platform-admin"])
    group = inputs(plan, NODE_GROUP, "aws-eks-gpu-nodes")
    assert group["amiType"] == "AL2023_x86_64_NVIDIA"
    # AL2023 keeps containers on the root volume.
    assert inputs(plan, LAUNCH_TEMPLATE, "aws-eks-gpu-template")["blockDeviceMappings"][0]["deviceName"] == \
        "/dev/xvda"
    plugin = inputs(plan, "kubernetes:apps/v1:DaemonSet")
    spec = plugin["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"servestack.io/pool": "gpu"}
    # The deployer (the fake caller's role) and the listed admin, each once, as cluster admins.
    entries = sorted(r["inputs"]["principalArn"] for r in resources(plan, "aws:eks/accessEntry:AccessEntry"))
    assert entries == ["arn:aws:iam::123456789012:role/platform-admin",
                       "arn:aws:iam::123456789012:role/platform-deployer"]
    associations = resources(plan, "aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
    assert len(associations) == 2
    assert all(a["inputs"]["policyArn"].endswith(":cluster-access-policy/AmazonEKSClusterAdminPolicy")
               for a in associations)


def test_internal_load_balancer_admits_only_the_vpc(tmp_path_factory: pytest.TempPathFactory) -> None:
    plan = _variant(tmp_path_factory, "aws-internal", access={"internalLoadBalancer": True,
                                                               "apiCidrs": ["198.51.100.0/24"]})
    assert _envoy_service(plan)["annotations"][f"{LB}-scheme"] == "internal"
    by_cidr = [r["inputs"] for r in resources(plan, INGRESS) if r["inputs"].get("cidrIpv4")]
    assert sorted((r["cidrIpv4"], r["fromPort"]) for r in by_cidr) == [("10.0.0.0/16", 80.0), ("10.0.0.0/16", 443.0)]
    # An internal NLB's DNS name, which resolves to addresses inside the VPC: the hostname's CNAME points there.
    assert re.fullmatch(f"internal-{NLB_NAME}", plan["outputs"]["address"])
    assert check_plan(plan) == []


def test_ipv6_clients_get_an_ipv6_rule_on_the_load_balancer_port(tmp_path_factory: pytest.TempPathFactory) -> None:
    plan = _variant(tmp_path_factory, "aws-ipv6", access={"endpointCidrs": ["203.0.113.0/24", "2001:db8::/32"],
                                                          "apiCidrs": ["198.51.100.0/24"]})
    clients = [r["inputs"] for r in resources(plan, INGRESS) if r["name"].startswith("aws-network-lb-from-clients")]
    # EC2 refuses an IPv6 range in cidrIpv4 (and the reverse): each family goes in its own field.
    # (The plan lists resources in the order their registrations complete, which varies.)
    assert sorted((r.get("cidrIpv4") or "", r.get("cidrIpv6") or "", r["fromPort"]) for r in clients) == [
        ("", "2001:db8::/32", 80.0), ("", "2001:db8::/32", 443.0),
        ("203.0.113.0/24", "", 80.0), ("203.0.113.0/24", "", 443.0)]


def test_ipv6_api_ranges_fail_the_plan_by_name(tmp_path_factory: pytest.TempPathFactory) -> None:
    with pytest.raises(PlanError) as error:
        _variant(tmp_path_factory, "aws-ipv6-api", access={"endpointCidrs": ["203.0.113.0/24"],
                                                           "apiCidrs": ["2001:db8::/32"]})
    assert ("servestack:access.apiCidrs[0]: '2001:db8::/32' is an IPv6 range; the public endpoint of an IPv4 "
            "EKS cluster admits IPv4 ranges only") in str(error.value)


@pytest.mark.parametrize(("gateway", "problem"), [
    ({"hostname": "api.other.example.org"},
     "servestack:gateway.hostname: 'api.other.example.org' is not inside the DNS zone 'servestack.example.com' that "
     "servestack:gateway.dnsZone ('Z0SERVESTACKEXAMPLE0') names"),
    ({"dnsZone": "Z0UNKNOWNZONE"},
     "`pulumi up` would fail: invoking aws:route53/getZone:getZone: NoSuchHostedZone: No hosted zone found with ID: "
     "Z0UNKNOWNZONE"),
], ids=["hostname-outside-the-zone", "unknown-zone"])
def test_a_hostname_the_zone_cannot_hold_fails_the_plan_by_name(tmp_path_factory: pytest.TempPathFactory,
                                                                 gateway: dict[str, Any], problem: str) -> None:
    config = _stack_config("aws-dev")["servestack:gateway"]
    stacks = stack_variant(tmp_path_factory.mktemp("zone"), "aws-dev", "aws-zone",
                           **{"servestack:gateway": {**config, **gateway}})
    with pytest.raises(PlanError) as error:
        plan_in_subprocess("aws-zone", stacks_dir=stacks)
    assert problem in str(error.value)


def test_the_zone_apex_and_a_private_zone_are_refused_by_name() -> None:
    class Zone:
        def __init__(self, private: bool) -> None:
            self.name, self.private_zone = HOSTED_ZONES[ZONE]["name"], private

    with pytest.raises(ConfigError) as apex:
        _record_name("aws-dev", "servestack.example.com", ZONE, Zone(private=False))
    assert apex.value.problems == [
        "servestack:gateway.hostname: 'servestack.example.com' is the apex of the zone 'Z0SERVESTACKEXAMPLE0'; the "
        "hostname points at the load balancer's DNS name with a CNAME, which DNS allows only below the apex: use a "
        "name such as api.servestack.example.com"]
    with pytest.raises(ConfigError) as private:
        _record_name("aws-dev", "api.servestack.example.com", ZONE, Zone(private=True))
    assert "'Z0SERVESTACKEXAMPLE0' is a private hosted zone (servestack.example.com)" in private.value.problems[0]
    assert _record_name("aws-dev", "api.servestack.example.com", ZONE, Zone(private=False)) == \
        "api.servestack.example.com"


def test_kubeconfig_gets_its_token_from_the_aws_cli() -> None:
    config = json.loads(kubeconfig("servestack-aws-dev", "https://example.eks.amazonaws.com", "Q0E=", "eu-west-1"))
    (cluster,) = config["clusters"]
    assert cluster["cluster"] == {"server": "https://example.eks.amazonaws.com", "certificate-authority-data": "Q0E="}
    (user,) = config["users"]
    assert user["user"]["exec"]["command"] == "aws"
    assert user["user"]["exec"]["args"] == ["eks", "get-token", "--cluster-name", "servestack-aws-dev",
                                            "--region", "eu-west-1", "--output", "json"]
    assert config["current-context"] == "servestack-aws-dev"


def test_unpinned_kubernetes_version_fails_the_plan_by_name(tmp_path_factory: pytest.TempPathFactory) -> None:
    stacks = tmp_path_factory.mktemp("aws-old")
    document = yaml.safe_load((STACKS_DIR / "Pulumi.aws-dev.yaml").read_text())
    document["config"]["servestack:kubernetesVersion"] = "1.36"
    (stacks / "Pulumi.aws-old.yaml").write_text(yaml.safe_dump(document))
    with pytest.raises(PlanError) as error:
        plan_in_subprocess("aws-old", stacks_dir=stacks)
    assert "servestack:kubernetesVersion: '1.36' has no pinned EKS add-on versions" in str(error.value)
    assert "allowed on aws: 1.34, 1.35" in str(error.value)


def _aws_config(**aws: Any) -> dict[str, Any]:
    config = dict(_stack_config("aws-dev"))
    config["servestack:aws"] = {**config["servestack:aws"], **aws}
    return config


def test_stack_files_parse() -> None:
    for stack in STACKS:
        config = parse_config(stack, _stack_config(stack))
        assert config.cloud == "aws" and config.gpu.machine_type == "g6.xlarge"
    assert parse_config("aws-prod", _stack_config("aws-prod")).model.source == "bucket"


@pytest.mark.parametrize(("aws", "problem"), [
    ({"natGateways": "double"},
     "servestack:aws.natGateways: 'double' is not "),
    ({"gpuAmiType": "AL2_x86_64_GPU"},
     "servestack:aws.gpuAmiType: 'AL2_x86_64_GPU' is not "),
    ({"systemInstanceType": "large"},
     "servestack:aws.systemInstanceType: 'large' is not an EC2 instance type such as m6i.large"),
    ({"systemMinNodes": 4, "systemMaxNodes": 3},
     "servestack:aws.systemMinNodes: 4 is greater than servestack:aws.systemMaxNodes (3); "
     "systemMinNodes must be <= systemMaxNodes"),
    ({"adminPrincipalArns": ["alice"]},
     "servestack:aws.adminPrincipalArns[0]: 'alice' is not an IAM role or user ARN such as "
     "arn:aws:iam::123456789012:role/platform-admin"),
    ({"adminPrincipalArns": 7},
     "servestack:aws.adminPrincipalArns: 7 is not a list of IAM role or user ARNs"),
    ({"flowLogs": "sometimes"},
     "servestack:aws.flowLogs: 'sometimes' is not true or false"),
    ({"availabilityZones": 4},
     "servestack:aws.availabilityZones: 4 is greater than 3; it must be at most 3"),
    ({"natGateway": "single"},
     "servestack:aws.natGateway: unknown key; known: "),
])
def test_bad_aws_config_is_named(aws: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config("aws-dev", _aws_config(**aws))
    assert len(error.value.problems) == 1
    assert error.value.problems[0].startswith(problem), error.value.problems


def test_bad_aws_enum_config_lists_what_is_allowed() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config("aws-dev", _aws_config(natGateways="double", gpuAmiType="AL2_x86_64_GPU"))
    assert error.value.problems[0].endswith("allowed: single, perAz")
    assert error.value.problems[1].endswith("allowed: BOTTLEROCKET_x86_64_NVIDIA, AL2023_x86_64_NVIDIA")


def test_container_logs_go_to_a_log_group_of_the_cluster_which_fluent_bit_alone_may_write(
        stack_plan: Callable[[str], dict[str, Any]]) -> None:
    prod = stack_plan("aws-prod")
    cluster_name = inputs(prod, CLUSTER)["name"]
    group = inputs(prod, "aws:cloudwatch/logGroup:LogGroup", "aws-container-logs")
    assert group == {"name": f"/aws/eks/{cluster_name}/containers", "retentionInDays": 30.0}
    trust = json.loads(inputs(prod, ROLE, "aws-fluent-bit-role")["assumeRolePolicy"])["Statement"][0]
    assert "system:serviceaccount:kube-system:aws-for-fluent-bit" in trust["Condition"]["StringEquals"].values()
    (statement,) = json.loads(inputs(prod, ROLE_POLICY, "aws-fluent-bit-policy")["policy"])["Statement"]
    assert statement == {
        "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"],
        "Resource": f"arn:aws:logs:us-east-1:123456789012:log-group:/aws/eks/{cluster_name}/containers:*"}
    release = one(prod, HELM, "aws-fluent-bit")
    chart = release["inputs"]
    assert (chart["repositoryOpts"]["repo"], chart["chart"], chart["version"]) == \
        ("https://aws.github.io/eks-charts", "aws-for-fluent-bit", "0.2.0")
    values = chart["values"]
    assert values["cloudWatchLogs"]["logGroupName"] == f"/aws/eks/{cluster_name}/containers"
    assert values["cloudWatchLogs"]["autoCreateGroup"] is False and values["cloudWatch"] == {"enabled": False}
    assert re.fullmatch(r"arn:aws:iam::123456789012:role/aws-fluent-bit-role-[0-9a-f]{7}",
                        values["serviceAccount"]["annotations"]["eks.amazonaws.com/role-arn"])
    assert values["tolerations"] == [{"operator": "Exists"}]
    logs = values["cloudWatchLogs"]
    assert logs["logStreamTemplate"] == \
        "$kubernetes['namespace_name'].$kubernetes['pod_name'].$kubernetes['container_name']"
    # Chart 0.2.0 writes log_stream_name and log_stream_prefix only when they are non-empty (`{{- if ... }}`), and
    # Fluent Bit's cloudwatch_logs refuses to start without one of them, the template notwithstanding.
    written = [key for key in ("logStreamName", "logStreamPrefix") if logs.get(key)]
    assert written == ["logStreamPrefix"] and logs["logStreamPrefix"] == "fallback-"
    assert one(prod, ROLE_POLICY, "aws-fluent-bit-policy")["urn"] in release["dependencies"]
    # Without monitoring, no log pipeline of the stack's.
    dev = stack_plan("aws-dev")
    assert not [r for r in dev["resources"] if "fluent-bit" in r["name"] or r["name"] == "aws-container-logs"]
