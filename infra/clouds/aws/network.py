"""The VPC and its security groups.

Public subnets hold only load balancers and NAT gateways (nothing gets a public IP on launch); nodes
live in private subnets that reach the internet through NAT: one shared gateway, or one per zone so
that a zone's outage does not cut the others off, and S3 (the model bucket, ECR's image layers) through
a gateway endpoint that costs nothing and keeps that traffic off NAT. Every security group rule is a
standalone resource (none inline), so that no group is managed in two places and the plan shows each rule.

`Network.ready` lists every piece of plumbing the cluster's controllers use: routes, NAT and internet
gateways, the S3 endpoint and every security group rule. The cluster depends on all of it, and through
the cluster so does everything built on it; `pulumi destroy` deletes in reverse dependency order, so
the load balancer controller still has its routes and rules while it deletes the serving load balancer.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.clouds.aws.iam import partition_of

# The node port range Kubernetes services use (also the NLB's health check port for Local traffic).
NODE_PORTS = (30000, 32767)
# What the control plane calls on the nodes: kubelet, webhooks on 443, the AWS Load Balancer Controller's
# (and KEDA's) webhook on 9443, the metrics-server add-on (the metrics API) on 10251 and KEDA's metrics API
# server (the external metrics the serving autoscaler reads) on 6443.
CONTROL_PLANE_TO_NODE_PORTS = ((443, "admission webhooks"), (6443, "KEDA metrics API"),
                               (9443, "AWS Load Balancer Controller webhook"),
                               (10250, "kubelet API"), (10251, "metrics-server add-on"))
FLOW_LOG_RETENTION_DAYS = 90
# Zones (by zone ID: zone names map to IDs differently in every account) where EKS places no control
# plane: a cluster with a subnet there fails with UnsupportedAvailabilityZoneException.
EKS_UNSUPPORTED_ZONE_IDS = ("use1-az3", "usw1-az2", "cac1-az3", "cnn1-az4")


@dataclass(frozen=True)
class NetworkArgs:
    # `name` is the stem of Name tags and descriptions; `cluster_name` the EKS cluster's real name, which
    # the subnets' cluster tag must carry (the load balancer controller skips subnets tagged for another).
    name: str
    cluster_name: pulumi.Input[str]
    region: str
    vpc_cidr: str
    availability_zones: int
    nat_per_az: bool
    flow_logs: bool
    # The public entry's ports (StackConfig.entry_ports): the gateway's listeners, or the serving Service's.
    lb_ports: Sequence[int]
    # Who may reach the serving load balancer: the allowed client CIDRs (the VPC when internal).
    lb_client_cidrs: Sequence[str]
    # The GPU pool's instance type: the subnets go only to zones that offer it.
    gpu_instance_type: str


def subnet_cidrs(vpc_cidr: str, zones: int) -> tuple[list[str], list[str]]:
    """Private and public subnet CIDRs: a quarter of the VPC per zone for pods and nodes (the VPC CNI
    gives every pod a VPC address), and small public subnets cut from the last quarter."""
    quarters = list(ipaddress.IPv4Network(vpc_cidr).subnets(prefixlen_diff=2))
    private = [str(q) for q in quarters[:zones]]
    public = [str(p) for p in list(quarters[3].subnets(prefixlen_diff=2))[:zones]]
    return private, public


class Network(pulumi.ComponentResource):
    """VPC, subnets, internet and NAT gateways, routes, flow logs and the cluster's security groups."""

    vpc: aws.ec2.Vpc
    private_subnet_ids: list[pulumi.Output[str]]
    public_subnet_ids: list[pulumi.Output[str]]
    cluster_security_group: aws.ec2.SecurityGroup
    node_security_group: aws.ec2.SecurityGroup
    lb_security_group: aws.ec2.SecurityGroup
    # What must outlive everything built on the cluster (see the module docstring).
    ready: list[pulumi.Resource]

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("servestack:aws:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.ready = []
        stem = args.name

        def subnet_tags(name_tag: str, role: str) -> pulumi.Output[dict[str, str]]:
            return pulumi.Output.from_input(args.cluster_name).apply(
                lambda cluster: {"Name": name_tag, role: "1", f"kubernetes.io/cluster/{cluster}": "shared"})

        self.vpc = aws.ec2.Vpc(
            f"{name}-vpc", cidr_block=args.vpc_cidr, enable_dns_hostnames=True, enable_dns_support=True,
            tags={"Name": stem}, opts=child)
        # The default group admits all traffic between its members: strip it so nothing relies on it.
        aws.ec2.DefaultSecurityGroup(f"{name}-default-sg", vpc_id=self.vpc.id,
                                     tags={"Name": f"{stem}-default-unused"}, opts=child)
        zones = aws.get_availability_zones_output(
            state="available", filters=[aws.GetAvailabilityZonesFilterArgs(name="opt-in-status",
                                                                           values=["opt-in-not-required"])],
            exclude_zone_ids=list(EKS_UNSUPPORTED_ZONE_IDS), opts=pulumi.InvokeOutputOptions(parent=self))
        offered = aws.ec2.get_instance_type_offerings_output(
            location_type="availability-zone",
            filters=[aws.ec2.GetInstanceTypeOfferingsFilterArgs(name="instance-type", values=[args.gpu_instance_type])],
            opts=pulumi.InvokeOutputOptions(parent=self))
        chosen = pulumi.Output.all(zones.names, offered.locations).apply(
            lambda values: gpu_zones(values[0], values[1], args.gpu_instance_type, args.availability_zones))
        igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=self.vpc.id, tags={"Name": stem}, opts=child)
        self.ready.append(igw)

        private_cidrs, public_cidrs = subnet_cidrs(args.vpc_cidr, args.availability_zones)
        public_routes = aws.ec2.RouteTable(f"{name}-public-rt", vpc_id=self.vpc.id,
                                           tags={"Name": f"{stem}-public"}, opts=child)
        self.ready.append(aws.ec2.Route(f"{name}-public-default-route", route_table_id=public_routes.id,
                                        destination_cidr_block="0.0.0.0/0", gateway_id=igw.id, opts=child))

        self.public_subnet_ids, self.private_subnet_ids = [], []
        nat_ids: list[pulumi.Output[str]] = []
        private_route_tables: list[pulumi.Output[str]] = []
        # The zones are chosen when a subnet is made and kept after: AWS may start offering the GPU in an
        # earlier zone later, and moving a subnet would replace it and everything in it.
        placed = pulumi.ResourceOptions(parent=self, ignore_changes=["availabilityZone"])
        for i in range(args.availability_zones):
            zone = chosen[i]
            public = aws.ec2.Subnet(
                f"{name}-public-{i}", vpc_id=self.vpc.id, cidr_block=public_cidrs[i], availability_zone=zone,
                map_public_ip_on_launch=False,
                # Internet-facing load balancers go here.
                tags=subnet_tags(f"{stem}-public-{i}", "kubernetes.io/role/elb"), opts=placed)
            self.ready.append(aws.ec2.RouteTableAssociation(f"{name}-public-{i}-rt", subnet_id=public.id,
                                                            route_table_id=public_routes.id, opts=child))
            private = aws.ec2.Subnet(
                f"{name}-private-{i}", vpc_id=self.vpc.id, cidr_block=private_cidrs[i], availability_zone=zone,
                map_public_ip_on_launch=False,
                tags=subnet_tags(f"{stem}-private-{i}", "kubernetes.io/role/internal-elb"), opts=placed)
            self.public_subnet_ids.append(public.id)
            self.private_subnet_ids.append(private.id)
            if i == 0 or args.nat_per_az:
                eip = aws.ec2.Eip(f"{name}-nat-{i}-ip", domain="vpc", tags={"Name": f"{stem}-nat-{i}"}, opts=child)
                nat = aws.ec2.NatGateway(
                    f"{name}-nat-{i}", allocation_id=eip.allocation_id, subnet_id=public.id,
                    tags={"Name": f"{stem}-nat-{i}"},
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[igw]))
                nat_ids.append(nat.id)
                self.ready.append(nat)
            private_routes = aws.ec2.RouteTable(f"{name}-private-{i}-rt", vpc_id=self.vpc.id,
                                                tags={"Name": f"{stem}-private-{i}"}, opts=child)
            private_route_tables.append(private_routes.id)
            self.ready.append(aws.ec2.Route(
                f"{name}-private-{i}-default-route", route_table_id=private_routes.id,
                destination_cidr_block="0.0.0.0/0", nat_gateway_id=nat_ids[-1], opts=child))
            self.ready.append(aws.ec2.RouteTableAssociation(f"{name}-private-{i}-rta", subnet_id=private.id,
                                                            route_table_id=private_routes.id, opts=child))
        # S3 without NAT: model downloads and ECR's image layers (served from S3) cost no NAT processing.
        self.ready.append(aws.ec2.VpcEndpoint(
            f"{name}-s3-endpoint", vpc_id=self.vpc.id, service_name=f"com.amazonaws.{args.region}.s3",
            vpc_endpoint_type="Gateway", route_table_ids=private_route_tables,
            tags={"Name": f"{stem}-s3"}, opts=child))

        if args.flow_logs:
            self._flow_logs(name, args)
        self._security_groups(name, args)
        self.register_outputs({"vpcId": self.vpc.id, "privateSubnetIds": self.private_subnet_ids,
                               "publicSubnetIds": self.public_subnet_ids})

    def _flow_logs(self, name: str, args: NetworkArgs) -> None:
        child = pulumi.ResourceOptions(parent=self)
        # Named after the cluster's real name, so that a stack destroyed and created again never meets
        # the group of its previous life.
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-flow-logs", name=pulumi.Output.concat("/aws/vpc/", args.cluster_name, "/flow-logs"),
            retention_in_days=FLOW_LOG_RETENTION_DAYS, opts=child)
        account = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self)).account_id
        role = aws.iam.Role(
            f"{name}-flow-logs-role",
            assume_role_policy=account.apply(lambda account_id: flow_log_trust(account_id, args.region)),
            opts=child)
        aws.iam.RolePolicy(
            f"{name}-flow-logs-policy", role=role.id,
            policy=log_group.arn.apply(_flow_log_policy),
            opts=child)
        aws.ec2.FlowLog(f"{name}-flow-log", vpc_id=self.vpc.id, traffic_type="ALL",
                        log_destination_type="cloud-watch-logs", log_destination=log_group.arn,
                        iam_role_arn=role.arn, max_aggregation_interval=60, opts=child)

    def _security_groups(self, name: str, args: NetworkArgs) -> None:
        child = pulumi.ResourceOptions(parent=self)
        vpc_id = self.vpc.id
        stem = args.name
        self.cluster_security_group = aws.ec2.SecurityGroup(
            f"{name}-cluster-sg", vpc_id=vpc_id, description=f"EKS control plane of {stem}",
            tags={"Name": f"{stem}-cluster"}, opts=child)
        self.node_security_group = aws.ec2.SecurityGroup(
            f"{name}-node-sg", vpc_id=vpc_id, description=f"EKS nodes of {stem}",
            tags={"Name": f"{stem}-nodes"}, opts=child)
        self.lb_security_group = aws.ec2.SecurityGroup(
            f"{name}-lb-sg", vpc_id=vpc_id, description=f"Serving load balancer of {stem}",
            tags={"Name": f"{stem}-serving-lb"}, opts=child)
        cluster, nodes, lb = (self.cluster_security_group.id, self.node_security_group.id,
                              self.lb_security_group.id)

        def ingress(rule: str, group: pulumi.Input[str], description: str, protocol: str = "tcp",
                    ports: tuple[int, int] | None = None, source_group: pulumi.Input[str] | None = None,
                    cidr: str | None = None, formerly: str | None = None) -> None:
            # EC2 takes IPv4 and IPv6 ranges in separate fields, and refuses either in the other's.
            ipv6 = cidr is not None and ipaddress.ip_network(cidr).version == 6
            aliases = [pulumi.Alias(name=f"{name}-{formerly}")] if formerly else None
            self.ready.append(aws.vpc.SecurityGroupIngressRule(
                f"{name}-{rule}", security_group_id=group, description=description, ip_protocol=protocol,
                from_port=ports[0] if ports else None, to_port=ports[1] if ports else None,
                referenced_security_group_id=source_group, cidr_ipv4=None if ipv6 else cidr,
                cidr_ipv6=cidr if ipv6 else None,
                opts=pulumi.ResourceOptions(parent=self, aliases=aliases)))

        def egress(rule: str, group: pulumi.Input[str], description: str, protocol: str = "tcp",
                   ports: tuple[int, int] | None = None, target_group: pulumi.Input[str] | None = None,
                   cidr: str | None = None) -> None:
            self.ready.append(aws.vpc.SecurityGroupEgressRule(
                f"{name}-{rule}", security_group_id=group, description=description, ip_protocol=protocol,
                from_port=ports[0] if ports else None, to_port=ports[1] if ports else None,
                referenced_security_group_id=target_group, cidr_ipv4=cidr, opts=child))

        # Control plane <-> nodes.
        ingress("cluster-from-nodes-https", cluster, "Nodes and pods to the Kubernetes API",
                ports=(443, 443), source_group=nodes)
        for port, what in CONTROL_PLANE_TO_NODE_PORTS:
            ingress(f"nodes-from-cluster-{port}", nodes, f"Control plane to the nodes: {what}",
                    ports=(port, port), source_group=cluster)
            egress(f"cluster-to-nodes-{port}", cluster, f"Control plane to the nodes: {what}",
                   ports=(port, port), target_group=nodes)
        # Node to node: pod networking, DNS, everything inside the node group.
        ingress("nodes-from-nodes", nodes, "Node to node: pods, DNS and services", protocol="-1",
                source_group=nodes)
        # Nodes reach AWS APIs, ECR, S3 and the model/image sources through NAT.
        egress("nodes-to-anywhere", nodes, "Nodes to AWS APIs, registries and the NAT gateway", protocol="-1",
               cidr="0.0.0.0/0")
        # The serving load balancer: clients on the entry's ports, then on to the nodes' ports (instance targets:
        # the NLB sends to each node's node port, whichever node the Envoy or serving pods run on).
        for j, port in enumerate(args.lb_ports):
            for i, client in enumerate(args.lb_client_cidrs):
                # The first port's rules carried the client's index alone when the entry had one port: the alias
                # updates such a rule in place, where a new one beside it would fail as a duplicate
                # (InvalidPermission.Duplicate).
                ingress(f"lb-from-clients-{port}-{i}", lb,
                        f"Serving clients ({client}) to the load balancer port {port}", ports=(port, port),
                        cidr=client, formerly=f"lb-from-clients-{i}" if j == 0 else None)
        # Rule descriptions take only a-z A-Z 0-9 space and ._-:/()#,@[]+=;{}!$* (no apostrophe).
        egress("lb-to-nodes", lb, "Load balancer to the service node ports and health check",
               ports=NODE_PORTS, target_group=nodes)
        ingress("nodes-from-lb", nodes, "Load balancer to the service node ports and health check",
                ports=NODE_PORTS, source_group=lb)


def gpu_zones(zones: Sequence[str], offering: Sequence[str], instance_type: str, count: int) -> list[str]:
    """The first `count` zones (of those EKS supports) that offer the GPU instance type: a subnet in a zone
    without it would hold no GPU node, and in prod pay for a NAT gateway of its own."""
    usable = [z for z in zones if z in set(offering)]
    if len(usable) < count:
        raise ValueError(f"servestack:aws.availabilityZones: {count} zones wanted, but {instance_type} is offered in "
                         f"{len(usable)} of the region's zones that EKS supports ({', '.join(usable) or 'none'}); "
                         "choose another region or instance type, or fewer zones")
    return usable[:count]


def flow_log_trust(account_id: str, region: str) -> str:
    """VPC Flow Logs may assume the role for this account's flow logs only (no confused deputy)."""
    flow_logs = f"arn:{partition_of(region)}:ec2:{region}:{account_id}:vpc-flow-log/*"
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"Service": "vpc-flow-logs.amazonaws.com"},
        "Condition": {"StringEquals": {"aws:SourceAccount": account_id}, "ArnLike": {"aws:SourceArn": flow_logs}},
    }]})


def _flow_log_policy(log_group_arn: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogGroups",
                   "logs:DescribeLogStreams"],
        "Resource": [log_group_arn, f"{log_group_arn}:*"]}]})
