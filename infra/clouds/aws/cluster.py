"""The EKS cluster, its identity plumbing and its node groups.

Order matters on EKS and is spelled out here: the cluster is created without its self-managed add-ons,
then vpc-cni and kube-proxy (nodes stay NotReady without a CNI), then the node groups, then CoreDNS,
metrics-server and the EBS CSI driver (which report Degraded until they have nodes to run on).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
from pulumi_command import local

from infra import commands
from infra.clouds.aws import iam
from infra.platform import GPU_POOL_LABEL, GPU_POOL_VALUE, GPU_TAINT_EFFECT, GPU_TAINT_KEY, GPU_TAINT_VALUE

CONTROL_PLANE_LOGS = ("api", "audit", "authenticator", "controllerManager", "scheduler")
SYSTEM_POOL_LABEL_VALUE = "system"
# The label the cluster autoscaler's AWS provider reads to tell GPU nodes apart.
ACCELERATOR_LABEL = "k8s.amazonaws.com/accelerator"
# EKS add-on builds, pinned per Kubernetes minor, from the EKS user guide's version tables (vpc-cni,
# kube-proxy, CoreDNS), the community add-on listing (metrics-server, which the serving HPA's CPU
# target needs: EKS has no metrics API by default) and `describe-addon-versions` (aws-ebs-csi-driver: EKS
# provisions no volume without it, Prometheus' included; v1.66.0-eksbuild.1 was the default build for 1.36
# in 2026-09, and the driver's builds are published for every supported minor). A pin is decided here, not
# by whatever EKS flags as
# default on the day of `pulumi up`, so that no `up` rolls the CNI out unreviewed. Newer builds:
#   aws eks describe-addon-versions --kubernetes-version 1.35 --addon-name vpc-cni
# A minor without pins is refused by the config check (infra/clouds/aws/__init__.py).
ADDON_VERSIONS: dict[str, dict[str, str]] = {
    "1.34": {"vpc-cni": "v1.21.1-eksbuild.7", "kube-proxy": "v1.34.6-eksbuild.2", "coredns": "v1.13.2-eksbuild.7",
             "metrics-server": "v0.8.1-eksbuild.5", "aws-ebs-csi-driver": "v1.66.0-eksbuild.1"},
    "1.35": {"vpc-cni": "v1.21.1-eksbuild.7", "kube-proxy": "v1.35.3-eksbuild.2", "coredns": "v1.14.2-eksbuild.4",
             "metrics-server": "v0.8.1-eksbuild.5", "aws-ebs-csi-driver": "v1.66.0-eksbuild.1"},
}
# The EBS CSI controller's service account, as the add-on names it: its IRSA role trusts exactly this one.
EBS_CSI_CONTROLLER_SA = "ebs-csi-controller-sa"
# Bottlerocket keeps the OS on its own small volume and containers on the second one.
DATA_DEVICE = {"BOTTLEROCKET_x86_64_NVIDIA": "/dev/xvdb", "BOTTLEROCKET_x86_64": "/dev/xvdb",
               "AL2023_x86_64_NVIDIA": "/dev/xvda", "AL2023_x86_64_STANDARD": "/dev/xvda"}
SYSTEM_AMI_TYPE = "AL2023_x86_64_STANDARD"
SYSTEM_DISK_GB = 50


@dataclass(frozen=True)
class NodePoolSpec:
    instance_type: str
    ami_type: str
    min_nodes: int
    max_nodes: int
    spot: bool
    disk_gb: int
    labels: Mapping[str, str]
    taints: Sequence[aws.eks.NodeGroupTaintArgs] = ()
    gpus: int = 0


@dataclass(frozen=True)
class ClusterArgs:
    name: str  # the stem of descriptions and Name tags
    cluster_name: pulumi.Input[str]
    # The network plumbing the controllers need until the last object on the cluster is deleted.
    network_ready: Sequence[pulumi.Resource]
    kubernetes_version: str
    partition: str
    is_prod: bool
    private_subnet_ids: Sequence[pulumi.Input[str]]
    cluster_security_group_id: pulumi.Input[str]
    node_security_group_id: pulumi.Input[str]
    api_cidrs: Sequence[str]
    admin_principal_arns: Sequence[str]
    # On-call IAM principals by Kubernetes group (infra/operators.py binds the groups to their Roles).
    on_call: Mapping[str, Sequence[str]]
    system_pool: NodePoolSpec
    gpu_pool: NodePoolSpec
    # The AWS CLI as the provider's identity (infra.commands.aws_cli), for the node groups' bounds.
    aws_cli: tuple[str, str]


class EksCluster(pulumi.ComponentResource):
    """KMS key, roles, control plane, OIDC provider, access entries, add-ons and the two node groups."""

    cluster: aws.eks.Cluster
    oidc_provider: aws.iam.OpenIdConnectProvider
    system_nodes: aws.eks.NodeGroup
    gpu_nodes: aws.eks.NodeGroup
    coredns: aws.eks.Addon
    metrics_server: aws.eks.Addon
    ebs_csi_driver: aws.eks.Addon
    access: list[pulumi.Resource]

    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("servestack:aws:EksCluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        versions = ADDON_VERSIONS[args.kubernetes_version]

        secrets_key = aws.kms.Key(
            f"{name}-secrets-key", description=f"Envelope encryption of {args.name}'s Kubernetes secrets",
            enable_key_rotation=True, deletion_window_in_days=30 if args.is_prod else 7, opts=child)
        role = aws.iam.Role(f"{name}-cluster-role", assume_role_policy=iam.service_trust("eks.amazonaws.com",
                                                                                          tag_session=True),
                            opts=child)
        attachment = aws.iam.RolePolicyAttachment(
            f"{name}-cluster-policy", role=role.name,
            policy_arn=iam.managed_policy(args.partition, "AmazonEKSClusterPolicy"), opts=child)
        # The control plane encrypts and decrypts secrets with the key through its role.
        key_use = aws.iam.RolePolicy(f"{name}-cluster-secrets-key", role=role.id,
                                     policy=secrets_key.arn.apply(iam.kms_key_user_policy), opts=child)
        # EKS would create this group with no expiry; creating it first sets the retention.
        logs = aws.cloudwatch.LogGroup(
            f"{name}-control-plane-logs", name=pulumi.Output.concat("/aws/eks/", args.cluster_name, "/cluster"),
            retention_in_days=90 if args.is_prod else 14, opts=child)

        public = bool(args.api_cidrs)
        self.cluster = aws.eks.Cluster(
            f"{name}-cluster",
            name=args.cluster_name,
            version=args.kubernetes_version,
            role_arn=role.arn,
            vpc_config=aws.eks.ClusterVpcConfigArgs(
                subnet_ids=list(args.private_subnet_ids),
                security_group_ids=[args.cluster_security_group_id],
                endpoint_private_access=True,
                endpoint_public_access=public,
                public_access_cidrs=list(args.api_cidrs) if public else None,
            ),
            access_config=aws.eks.ClusterAccessConfigArgs(
                authentication_mode="API", bootstrap_cluster_creator_admin_permissions=False),
            encryption_config=aws.eks.ClusterEncryptionConfigArgs(
                resources=["secrets"],
                provider=aws.eks.ClusterEncryptionConfigProviderArgs(key_arn=secrets_key.arn)),
            enabled_cluster_log_types=list(CONTROL_PLANE_LOGS),
            # vpc-cni, kube-proxy and CoreDNS come as pinned, managed add-ons below.
            bootstrap_self_managed_addons=False,
            # Standard support only: extended support costs six times as much per cluster hour.
            upgrade_policy=aws.eks.ClusterUpgradePolicyArgs(support_type="STANDARD"),
            # Everything on the cluster depends on the cluster, so with the network plumbing here, routes,
            # NAT and rules are deleted only after the last object (and its load balancer) is gone; on
            # create, nodes join only once their rules and routes exist (as terraform-aws-eks and
            # pulumi-eks wire it).
            opts=pulumi.ResourceOptions(parent=self,
                                        depends_on=[attachment, key_use, logs, *args.network_ready]),
        )
        issuer = self.cluster.identities.apply(_oidc_issuer)
        self.oidc_provider = aws.iam.OpenIdConnectProvider(
            f"{name}-oidc", url=issuer, client_id_lists=["sts.amazonaws.com"], opts=child)

        # Cluster admins are access entries Pulumi tracks: the identity running `pulumi up` (the one the
        # kubeconfig's get-token repeats) and the listed principals, each once. EKS's own bootstrap entry
        # for the creator would be an admin no plan shows, and listing the creator beside it fails (409).
        self.access = []
        policy_arn = f"arn:{args.partition}:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
        for principal in cluster_admins(deployer_arn(), args.admin_principal_arns):
            # Named after the principal, so that adding or removing one never renames the others.
            entry_name = f"{name}-admin-{hashlib.sha256(principal.encode()).hexdigest()[:8]}"
            entry = aws.eks.AccessEntry(entry_name, cluster_name=self.cluster.name, principal_arn=principal,
                                        type="STANDARD", opts=child)
            self.access.append(aws.eks.AccessPolicyAssociation(
                f"{entry_name}-policy", cluster_name=self.cluster.name, principal_arn=principal,
                policy_arn=policy_arn, access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[entry])))

        # On-call principals: an access entry each, with no access policy, only a Kubernetes group that a
        # namespaced RoleBinding gives its Role.
        for group, principals in args.on_call.items():
            for principal in principals:
                aws.eks.AccessEntry(f"{name}-on-call-{hashlib.sha256(principal.encode()).hexdigest()[:8]}",
                                    cluster_name=self.cluster.name, principal_arn=principal, type="STANDARD",
                                    kubernetes_groups=[group], opts=child)

        # The CNI's AWS permissions go to its own service account, not to every pod on the node.
        cni_role = iam.irsa_role(f"{name}-vpc-cni-role", self.oidc_provider, "kube-system", "aws-node", child)
        cni_policy = aws.iam.RolePolicyAttachment(
            f"{name}-vpc-cni-policy", role=cni_role.name,
            policy_arn=iam.managed_policy(args.partition, "AmazonEKS_CNI_Policy"), opts=child)
        # The policy before the add-on: aws-node cannot hand out pod addresses (nor nodes turn Ready) without it.
        vpc_cni = self._addon(name, "vpc-cni", versions, service_account_role_arn=cni_role.arn,
                              # Without it, the serving NetworkPolicy would be accepted and not enforced.
                              configuration_values=json.dumps({"enableNetworkPolicy": "true"}),
                              depends_on=[cni_policy])
        kube_proxy = self._addon(name, "kube-proxy", versions)

        node_role = aws.iam.Role(f"{name}-node-role", assume_role_policy=iam.service_trust("ec2.amazonaws.com"),
                                 opts=child)
        node_policies = [aws.iam.RolePolicyAttachment(
            f"{name}-node-{policy}", role=node_role.name, policy_arn=iam.managed_policy(args.partition, policy),
            opts=child) for policy in ("AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryPullOnly")]
        before_nodes: list[pulumi.Resource] = [vpc_cni, kube_proxy, *node_policies]
        self.system_nodes = self._node_group(f"{name}-system", args, args.system_pool, node_role, before_nodes)
        self.gpu_nodes = self._node_group(f"{name}-gpu", args, args.gpu_pool, node_role, before_nodes)
        self._scale_from_zero_tags(f"{name}-gpu", args.gpu_pool)
        self.coredns = self._addon(name, "coredns", versions, depends_on=[self.system_nodes])
        # A Deployment too (Degraded without nodes); it listens on 10251, which the node group admits.
        self.metrics_server = self._addon(name, "metrics-server", versions, depends_on=[self.system_nodes])
        # EBS volumes (Prometheus' disk): the controller creates, attaches and deletes them as its IRSA role, which
        # must keep its policy until the last volume is deleted; a Deployment too, so after the nodes. The V2
        # managed policy (2026-04, AWS's recommendation) acts only on volumes and snapshots the driver tagged as it
        # made them, not every EBS volume of the account: the stack imports none.
        ebs_role = iam.irsa_role(f"{name}-ebs-csi-role", self.oidc_provider, "kube-system", EBS_CSI_CONTROLLER_SA,
                                 child)
        ebs_policy = aws.iam.RolePolicyAttachment(
            f"{name}-ebs-csi-policy", role=ebs_role.name,
            policy_arn=iam.managed_policy(args.partition, "service-role/AmazonEBSCSIDriverPolicyV2"), opts=child)
        self.ebs_csi_driver = self._addon(name, "aws-ebs-csi-driver", versions, service_account_role_arn=ebs_role.arn,
                                          depends_on=[ebs_policy, self.system_nodes])

        self.register_outputs({"clusterName": self.cluster.name, "endpoint": self.cluster.endpoint,
                               "oidcProviderArn": self.oidc_provider.arn})

    def _addon(self, name: str, addon: str, versions: Mapping[str, str],
               service_account_role_arn: pulumi.Input[str] | None = None,
               configuration_values: str | None = None,
               depends_on: Sequence[pulumi.Resource] = ()) -> aws.eks.Addon:
        return aws.eks.Addon(
            f"{name}-{addon}", cluster_name=self.cluster.name, addon_name=addon, addon_version=versions[addon],
            service_account_role_arn=service_account_role_arn, configuration_values=configuration_values,
            resolve_conflicts_on_create="OVERWRITE", resolve_conflicts_on_update="PRESERVE",
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(depends_on)))

    def _node_group(self, name: str, args: ClusterArgs, pool: NodePoolSpec, role: aws.iam.Role,
                    depends_on: Sequence[pulumi.Resource]) -> aws.eks.NodeGroup:
        child = pulumi.ResourceOptions(parent=self)
        template = aws.ec2.LaunchTemplate(
            f"{name}-template",
            description=f"{args.name} {name} nodes",
            # IMDSv2 only, and one hop: pods cannot borrow the node's role; they use IRSA.
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=1),
            block_device_mappings=[aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                device_name=DATA_DEVICE[pool.ami_type],
                ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                    volume_size=pool.disk_gb, volume_type="gp3", encrypted="true", delete_on_termination="true"),
            )],
            vpc_security_group_ids=[args.node_security_group_id],
            tag_specifications=[aws.ec2.LaunchTemplateTagSpecificationArgs(
                resource_type="instance", tags={"Name": f"{args.name}-{name.rsplit('-', 1)[-1]}"})],
            update_default_version=True,
            opts=child,
        )
        group = aws.eks.NodeGroup(
            f"{name}-nodes",
            cluster_name=self.cluster.name,
            node_role_arn=role.arn,
            # The control plane's minor: upgrading kubernetesVersion rolls the nodes too.
            version=self.cluster.version,
            subnet_ids=list(args.private_subnet_ids),
            instance_types=[pool.instance_type],
            ami_type=pool.ami_type,
            capacity_type="SPOT" if pool.spot else "ON_DEMAND",
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=pool.min_nodes, max_size=pool.max_nodes, desired_size=pool.min_nodes),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(id=template.id,
                                                                version=template.latest_version.apply(str)),
            labels=dict(pool.labels),
            taints=list(pool.taints) or None,
            # Created with these bounds; after that the command below changes them, because the cluster
            # autoscaler owns the desired size and EKS refuses bounds that exclude it.
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(depends_on), ignore_changes=["scalingConfig"]),
        )

        def scaling(names: list[str]) -> str:
            cluster, node_group = names
            return commands.eks_scaling(args.aws_cli, cluster, node_group, pool.min_nodes, pool.max_nodes)

        local.Command(f"{name}-scaling",
                      create=pulumi.Output.all(self.cluster.name, group.node_group_name).apply(scaling),
                      opts=pulumi.ResourceOptions(parent=self, depends_on=[group]))
        return group

    def _scale_from_zero_tags(self, name: str, pool: NodePoolSpec) -> None:
        """Tags on the GPU group's Auto Scaling group describing a node that does not exist yet.

        The autoscaler reads labels and taints of an empty managed node group from the EKS API
        (eks:DescribeNodegroup), and the GPU count from its instance type table; these tags say the
        same for autoscaler versions or instance types where those fall short. EKS does not copy node
        group tags to the Auto Scaling group, so they are set on the group itself.
        """
        asg_name = self.gpu_nodes.resources.apply(_asg_name)
        template = "k8s.io/cluster-autoscaler/node-template"
        tags = {f"{template}/resources/nvidia.com/gpu": str(pool.gpus),
                f"{template}/taint/{GPU_TAINT_KEY}": f"{GPU_TAINT_VALUE}:{GPU_TAINT_EFFECT}",
                **{f"{template}/label/{key}": value for key, value in pool.labels.items()}}
        for i, (key, value) in enumerate(sorted(tags.items())):
            aws.autoscaling.Tag(
                f"{name}-asg-tag-{i}", autoscaling_group_name=asg_name,
                tag=aws.autoscaling.TagTagArgs(key=key, value=value, propagate_at_launch=False),
                opts=pulumi.ResourceOptions(parent=self))


def deployer_arn() -> str:
    """The IAM role or user running `pulumi up`, as the AWS provider authenticates (an assumed role's
    session resolves to its role, path included, as access entries need it)."""
    caller = aws.get_caller_identity()
    return aws.iam.get_session_context(arn=caller.arn).issuer_arn


def _principal_key(arn: str) -> tuple[str, str, str]:
    """Account, kind and name of a role or user ARN: `role/aws-reserved/sso.amazonaws.com/X` and `role/X`
    name the same role."""
    _, _, _, _, account, resource = arn.split(":", 5)
    kind, _, path = resource.partition("/")
    return account, kind, path.rsplit("/", 1)[-1]


def cluster_admins(deployer: str, admins: Sequence[str]) -> list[str]:
    """The deployer first, then each listed admin that is not the deployer or listed before."""
    seen = {_principal_key(deployer)}
    result = [deployer]
    for arn in admins:
        if _principal_key(arn) not in seen:
            seen.add(_principal_key(arn))
            result.append(arn)
    return result


def gpu_pool_labels(gpu_type: str) -> dict[str, str]:
    return {GPU_POOL_LABEL: GPU_POOL_VALUE, ACCELERATOR_LABEL: gpu_type}


def gpu_taints() -> list[aws.eks.NodeGroupTaintArgs]:
    return [aws.eks.NodeGroupTaintArgs(key=GPU_TAINT_KEY, value=GPU_TAINT_VALUE, effect="NO_SCHEDULE")]


def field(value: Any, name: str, wire_name: str | None = None) -> Any:
    """A field of a provider output object: a typed output class in a deployment, a plain dict of wire
    names when the values come from elsewhere (the mock runtime)."""
    if isinstance(value, Mapping) and not hasattr(type(value), name):
        return value.get(wire_name or name)
    return getattr(value, name, None)


def _oidc_issuer(identities: Sequence[Any] | None) -> str:
    for identity in identities or ():
        for oidc in field(identity, "oidcs") or ():
            issuer = field(oidc, "issuer")
            if issuer:
                return str(issuer)
    raise ValueError("the EKS cluster reported no OIDC issuer")


def _asg_name(resources: Sequence[Any] | None) -> str:
    for resource in resources or ():
        for group in field(resource, "autoscaling_groups", "autoscalingGroups") or ():
            name = field(group, "name")
            if name:
                return str(name)
    raise ValueError("the EKS node group reported no Auto Scaling group")
