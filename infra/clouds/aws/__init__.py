"""The `aws` platform: VPC, security groups, EKS with a GPU node group that scales from zero, ECR, a model
bucket and IRSA, returned as the same Platform value as every other cloud.

Design choices (docs/aws.md explains them for users):
- NAT: one shared gateway unless `servestack:aws.natGateways` says `perAz` (the default in prod).
- Scale from zero: the cluster autoscaler on EKS managed node groups (labels and taints of an empty
  group come from the EKS API, the GPU count from the instance type and the Auto Scaling group's tags).
- Device plugin: Bottlerocket NVIDIA nodes bring their own; AL2023 NVIDIA nodes need the DaemonSet.
- Load balancer: the AWS Load Balancer Controller, given a security group this module owns, so that
  the only rule admitting clients is ours and visible in the plan. Its target groups let connections to a
  terminating target finish (`_drain_annotations`).
- The gateway's certificate: ACME DNS-01 in the stack's Route 53 hosted zone, as an IRSA role (`dns.py`).
- Volumes: the EBS CSI driver add-on and an encrypted gp3 StorageClass, which Prometheus names.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s
import pulumi_random as random

from infra.clouds.aws import dns
from infra.clouds.aws.cluster import (
    ADDON_VERSIONS,
    SYSTEM_AMI_TYPE,
    SYSTEM_DISK_GB,
    SYSTEM_POOL_LABEL_VALUE,
    ClusterArgs,
    EksCluster,
    NodePoolSpec,
    gpu_pool_labels,
    gpu_taints,
)
from infra.clouds.aws.iam import bucket_reader_policy, irsa_role, partition_of
from infra.clouds.aws.kube import (
    STORAGE_CLASS,
    cluster_autoscaler,
    container_logs,
    kubeconfig_output,
    load_balancer_controller,
    storage_class,
)
from infra.clouds.aws.network import Network, NetworkArgs
from infra.clouds.aws.storage import ModelBucket, Registry
from infra.commands import aws_cli
from infra.config import DEFAULT_IMAGE_REPOSITORY, NAMESPACE, ConfigError, StackConfig
from infra.platform import GPU_POOL_LABEL, GPU_POOL_VALUE, GPU_TOLERATION, Platform, Upload, model_push_step
from infra.serving import SERVICE_ACCOUNT as SERVING_SERVICE_ACCOUNT

# The AMI types whose nodes advertise nvidia.com/gpu without the device plugin DaemonSet.
AMI_TYPES_WITH_DEVICE_PLUGIN = ("BOTTLEROCKET_x86_64_NVIDIA",)
LB_ANNOTATION = "service.beta.kubernetes.io/aws-load-balancer"
# The Kubernetes groups on-call's access entries put their IAM principals in (EKS refuses system:, eks:, aws:,
# amazon: and iam: prefixes).
VIEWER_GROUP = "servestack-viewers"
OPERATOR_GROUP = "servestack-operators"


@dataclass(frozen=True)
class GpuClusterArgs:
    config: StackConfig


class GpuCluster(pulumi.ComponentResource):
    """Everything the serving deployment needs on AWS, under one component."""

    platform: Platform

    def __init__(self, name: str, args: GpuClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("servestack:aws:GpuCluster", name, None, opts)
        config = args.config
        _check(config)
        region = str(config.region)
        partition = partition_of(region)
        child = pulumi.ResourceOptions(parent=self)
        # EKS writes its control-plane log group again while a cluster is being deleted, so a cluster
        # name reused by the next `pulumi up` meets that group and fails: each life of the stack gets a
        # suffix of its own. `stem` names the tags and descriptions that may stay the same.
        stem = f"servestack-{config.stack}"
        suffix = random.RandomString(f"{name}-cluster-suffix", length=6, special=False, upper=False, opts=child)
        cluster_name = pulumi.Output.concat(stem, "-", suffix.result)
        nat_per_az = (config.aws.nat_gateways or ("perAz" if config.is_prod else "single")) == "perAz"
        flow_logs = config.is_prod if config.aws.flow_logs is None else config.aws.flow_logs
        lb_clients = list(config.access.endpoint_cidrs) or [config.aws.vpc_cidr]

        network = Network(f"{name}-network", NetworkArgs(
            name=stem, cluster_name=cluster_name, region=region, vpc_cidr=config.aws.vpc_cidr,
            availability_zones=config.aws.availability_zones, nat_per_az=nat_per_az, flow_logs=flow_logs,
            lb_ports=config.entry_ports, lb_client_cidrs=lb_clients, gpu_instance_type=str(config.gpu.machine_type)),
            opts=child)

        gpu = config.gpu
        machine = config.gpu_machine()
        system_pool = NodePoolSpec(
            instance_type=config.aws.system_instance_type, ami_type=SYSTEM_AMI_TYPE,
            min_nodes=config.aws.system_min_nodes, max_nodes=config.aws.system_max_nodes, spot=False,
            disk_gb=SYSTEM_DISK_GB, labels={GPU_POOL_LABEL: SYSTEM_POOL_LABEL_VALUE})
        gpu_pool = NodePoolSpec(
            instance_type=str(gpu.machine_type), ami_type=config.aws.gpu_ami_type, min_nodes=gpu.min_nodes,
            max_nodes=gpu.max_nodes, spot=gpu.spot, disk_gb=gpu.disk_gb,
            labels=gpu_pool_labels(str(gpu.type)), taints=gpu_taints(),
            gpus=machine.gpus if machine else gpu.count)
        on_call = {group: principals for group, principals in (
            (VIEWER_GROUP, config.access.viewer_groups), (OPERATOR_GROUP, config.access.operator_groups)) if principals}
        eks = EksCluster(f"{name}-eks", ClusterArgs(
            name=stem, cluster_name=cluster_name, network_ready=network.ready,
            kubernetes_version=config.kubernetes_version, partition=partition,
            is_prod=config.is_prod, private_subnet_ids=network.private_subnet_ids,
            cluster_security_group_id=network.cluster_security_group.id,
            node_security_group_id=network.node_security_group.id, api_cidrs=config.access.api_cidrs,
            admin_principal_arns=config.aws.admin_principal_arns, on_call=on_call, system_pool=system_pool,
            gpu_pool=gpu_pool, aws_cli=aws_cli(config.aws.profile, config.aws.role_arn, region)), opts=child)

        registry = Registry(f"{name}-registry", prefix=stem, force_delete=not config.is_prod, opts=child)
        models = ModelBucket(f"{name}-models", force_destroy=not config.is_prod, opts=child)
        serving_role = irsa_role(f"{name}-serving-role", eks.oidc_provider, config.serving.namespace,
                                 SERVING_SERVICE_ACCOUNT, child)
        # In `ready`: the serving pods' init container reads the bucket as soon as they start.
        read_models = aws.iam.RolePolicy(f"{name}-serving-read-models", role=serving_role.id,
                                         policy=models.bucket.arn.apply(bucket_reader_policy), opts=child)

        provider_kubeconfig = kubeconfig_output(eks.cluster, region, config.aws.profile, config.aws.role_arn)
        provider = k8s.Provider(f"{name}-k8s", kubeconfig=provider_kubeconfig,
                                opts=pulumi.ResourceOptions(parent=self, depends_on=eks.access))
        node_ready: list[pulumi.Resource] = [eks.system_nodes, eks.coredns]
        autoscaler = cluster_autoscaler(f"{name}", eks.cluster, eks.oidc_provider, config.kubernetes_version,
                                        region, child, provider, node_ready)
        lb_controller = load_balancer_controller(
            f"{name}", eks.cluster, eks.oidc_provider, network.vpc.id, region, partition,
            replicas=2 if config.is_prod else 1, opts=child, provider=provider, depends_on=node_ready)
        gp3 = storage_class(name, child, provider, eks.ebs_csi_driver)
        if config.monitoring.enabled:
            # Named after the cluster's name with its random suffix: a new life of the stack never meets the old group.
            container_logs(name, cluster_name, eks.oidc_provider, region, child, provider, node_ready)

        lb: dict[str, pulumi.Input[str]] = {
            f"{LB_ANNOTATION}-type": "external",
            f"{LB_ANNOTATION}-nlb-target-type": "instance",
            f"{LB_ANNOTATION}-scheme": "internet-facing",
            # By id, not by Name tag: the Service then depends on the group, and outlives it on destroy.
            f"{LB_ANNOTATION}-security-groups": network.lb_security_group.id,
            # Our security groups carry the rules; the controller must not add its own.
            f"{LB_ANNOTATION}-manage-backend-security-group-rules": "false",
        }
        preamble, cli = aws_cli(config.aws.profile, config.aws.role_arn, region)
        # The uploads' instructions name the identity to upload as when the stack deploys as an assumed role.
        as_role = [f"(as {config.aws.role_arn}, the role this stack deploys as)"] if config.aws.role_arn else []

        def image_upload(tag: str, build: str) -> Upload:
            image = pulumi.Output.concat(registry.url, f"/{DEFAULT_IMAGE_REPOSITORY}:{tag}")
            return Upload(
                what=f"the serving image {DEFAULT_IMAGE_REPOSITORY}:{tag}",
                setup=preamble,
                check=pulumi.Output.concat(cli, " ecr describe-images --repository-name ", registry.repository.name,
                                           f" --image-ids imageTag={tag}"),
                steps=[*as_role, pulumi.Output.concat(cli, " ecr get-login-password | docker login --username AWS ",
                                            "--password-stdin ", registry.url.apply(_registry_host)),
                       pulumi.Output.concat(f"docker build {build}-t ", image, " serving"),
                       pulumi.Output.concat("docker push ", image)])

        def model_upload(model: str, revision: str) -> Upload:
            # The manifest is uploaded last: once it is there, the revision is whole.
            prefix = pulumi.Output.concat(models.uri, f"/models/{model}/{revision}/")
            return Upload(what=f"the model {model} at revision {revision} in the stack's bucket", setup=preamble,
                          check=pulumi.Output.concat(cli, " s3 ls ", prefix, "manifest.json"),
                          steps=[*as_role, model_push_step(revision)])

        self.platform = Platform(
            cloud="aws",
            k8s_provider=provider,
            gpu_node_selector={GPU_POOL_LABEL: GPU_POOL_VALUE},
            gpu_tolerations=(GPU_TOLERATION,),
            needs_device_plugin=config.aws.gpu_ami_type not in AMI_TYPES_WITH_DEVICE_PLUGIN,
            registry_url=registry.url,
            model_bucket_uri=models.uri,
            service_account_annotations={"eks.amazonaws.com/role-arn": serving_role.arn},
            load_balancer_annotations=lb,
            internal_load_balancer_annotations={f"{LB_ANNOTATION}-scheme": "internal"},
            internal_cidrs=(config.aws.vpc_cidr,),
            ready=(eks.system_nodes, eks.gpu_nodes, eks.coredns, eks.metrics_server, autoscaler, lb_controller,
                   read_models),
            cluster=eks.cluster,
            cluster_name=eks.cluster.name,
            storage_class=STORAGE_CLASS,
            storage_ready=(eks.ebs_csi_driver, gp3),
            kubeconfig=provider_kubeconfig,
            image_upload=image_upload,
            model_upload=model_upload,
            # The system group carries no taint: the selector alone keeps the add-ons off the GPU nodes.
            system_node_selector={GPU_POOL_LABEL: SYSTEM_POOL_LABEL_VALUE},
            drain_annotations=_drain_annotations,
            access_groups={role: [group] for role, group in (("viewer", VIEWER_GROUP), ("operator", OPERATOR_GROUP))
                           if group in on_call},
            acme_dns=dns.acme_dns(name, config, eks.oidc_provider, region, partition, self)
            if config.gateway.enabled and config.gateway.dns_zone else None,
        )
        self.register_outputs({"clusterName": eks.cluster.name, "registryUrl": registry.url,
                               "modelBucketUri": models.uri, "servingRoleArn": serving_role.arn})


def _check(config: StackConfig) -> None:
    """What the AWS module needs beyond the generic config checks."""
    problems = []
    if config.kubernetes_version not in ADDON_VERSIONS:
        problems.append(f"{NAMESPACE}:kubernetesVersion: {config.kubernetes_version!r} has no pinned EKS add-on "
                        f"versions in servestack; allowed on aws: {', '.join(ADDON_VERSIONS)}")
    for i, cidr in enumerate(config.access.api_cidrs):
        if ipaddress.ip_network(cidr).version == 6:
            problems.append(f"{NAMESPACE}:access.apiCidrs[{i}]: {cidr!r} is an IPv6 range; the public endpoint "
                            "of an IPv4 EKS cluster admits IPv4 ranges only")
    if config.gpu.type is None or config.gpu.machine_type is None:
        problems.append(f"{NAMESPACE}:gpu.type: the aws stacks need a GPU type and machine type")
    if problems:
        raise ConfigError(config.stack, problems)


def _drain_annotations(seconds: int) -> dict[str, str]:
    """NLB target group attributes for a backend that drains for `seconds` (Kubernetes review H1).

    With externalTrafficPolicy Local the NLB health-checks each node's healthCheckNodePort, which fails as soon
    as the node's only ready endpoint starts terminating; by default an NLB then resets every connection to that
    target (`target_health_state.unhealthy.connection_termination.enabled` is true), cutting streams mid-answer.
    Instead it stops sending new connections and lets established ones run for the drain, and keeps them for as
    long when the target is deregistered. Cross-zone balancing keeps every zone's address serving while a zone
    has no ready pod (an NLB otherwise fails that zone's address out of its DNS name)."""
    target_group = ",".join([
        "target_health_state.unhealthy.connection_termination.enabled=false",
        f"target_health_state.unhealthy.draining_interval_seconds={seconds}",
        f"deregistration_delay.timeout_seconds={seconds}",
    ])
    return {f"{LB_ANNOTATION}-target-group-attributes": target_group,
            f"{LB_ANNOTATION}-attributes": "load_balancing.cross_zone.enabled=true"}


def _registry_host(url: str) -> str:
    return url.split("/", 1)[0]


def build(config: StackConfig) -> Platform:
    return GpuCluster("aws", GpuClusterArgs(config=config)).platform
