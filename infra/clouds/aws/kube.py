"""Kubernetes access to the EKS cluster, and the controllers and agents the platform installs on it.

The kubeconfig authenticates with `aws eks get-token` (the operator's AWS credentials, mapped by an EKS
access entry). The cluster autoscaler scales the managed node groups, the GPU group from zero; the AWS
Load Balancer Controller provisions the serving Network Load Balancer with the security group the
network component owns; with servestack:monitoring, AWS for Fluent Bit sends every container's stdout to
CloudWatch Logs. All are Helm releases with pinned chart versions and IRSA roles. The gp3 StorageClass is what
the stack's volumes are made of, by the EBS CSI driver add-on (cluster.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.clouds.aws import iam
from infra.clouds.aws.cluster import SYSTEM_POOL_LABEL_VALUE, field
from infra.platform import GPU_POOL_LABEL

# Chart 9.59.0 ships autoscaler 1.35.0; the image tag below picks the release for older clusters.
CLUSTER_AUTOSCALER_CHART = ("https://kubernetes.github.io/autoscaler", "cluster-autoscaler", "9.59.0")
# The autoscaler's minor version must match the cluster's (one entry per minor of ADDON_VERSIONS).
CLUSTER_AUTOSCALER_IMAGES = {"1.34": "v1.34.3", "1.35": "v1.35.0"}
LOAD_BALANCER_CONTROLLER_CHART = ("https://aws.github.io/eks-charts", "aws-load-balancer-controller", "1.13.4")
# AWS's Fluent Bit image and chart (AWS for Fluent Bit 3.2.1): container logs only. The CloudWatch Observability
# add-on would add Container Insights metrics (charged per observation), Application Signals and a second DCGM
# exporter, all of which the stack's own Prometheus already covers.
FLUENT_BIT_CHART = ("https://aws.github.io/eks-charts", "aws-for-fluent-bit", "0.2.0")
FLUENT_BIT_SA = "aws-for-fluent-bit"
# One stream per namespace, pod and container (Fluent Bit record accessor syntax).
LOG_STREAM_TEMPLATE = "$kubernetes['namespace_name'].$kubernetes['pod_name'].$kubernetes['container_name']"
LOG_STREAM_FALLBACK_PREFIX = "fallback-"
CONTAINER_LOG_RETENTION_DAYS = 30
CLUSTER_AUTOSCALER_SA = "cluster-autoscaler"
# The class the stack's volumes (Prometheus') name: EKS clusters since 1.30 have no default class.
STORAGE_CLASS = "servestack-gp3"
EBS_CSI_PROVISIONER = "ebs.csi.aws.com"
LOAD_BALANCER_CONTROLLER_SA = "aws-load-balancer-controller"


def kubeconfig(cluster_name: str, endpoint: str, ca_data: str, region: str, profile: str | None = None,
               role_arn: str | None = None) -> str:
    """A kubeconfig (JSON, which is YAML) that gets its token from the AWS CLI, as the identity the AWS
    provider uses: its profile and assumed role are passed on (`--profile` rather than AWS_PROFILE, so
    that the provider's setting wins over whatever the shell exports)."""
    args = ["eks", "get-token", "--cluster-name", cluster_name, "--region", region, "--output", "json"]
    if role_arn:
        args += ["--role-arn", role_arn]
    if profile:
        args += ["--profile", profile]
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": "aws", "args": args,
                     "interactiveMode": "Never"}}
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": cluster_name,
        "clusters": [{"name": cluster_name, "cluster": {"server": endpoint, "certificate-authority-data": ca_data}}],
        "users": [{"name": cluster_name, "user": user}],
        "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": cluster_name}}],
    })


def kubeconfig_output(cluster: aws.eks.Cluster, region: str, profile: str | None,
                      role_arn: str | None) -> pulumi.Output[str]:
    def build(values: list[Any]) -> str:
        name, endpoint, authority = values
        return kubeconfig(name, endpoint, field(authority, "data"), region, profile, role_arn)

    return pulumi.Output.secret(
        pulumi.Output.all(cluster.name, cluster.endpoint, cluster.certificate_authority).apply(build))


def _system_placement() -> dict[str, Any]:
    return {"nodeSelector": {GPU_POOL_LABEL: SYSTEM_POOL_LABEL_VALUE}}


def _autoscaler_policy(values: list[str]) -> str:
    cluster_arn, cluster_name = values
    return iam.cluster_autoscaler_policy(cluster_arn, cluster_name)


def cluster_autoscaler(name: str, cluster: aws.eks.Cluster, oidc: aws.iam.OpenIdConnectProvider,
                       kubernetes_version: str, region: str, opts: pulumi.ResourceOptions,
                       provider: k8s.Provider, depends_on: Sequence[pulumi.Resource]) -> k8s.helm.v3.Release:
    role = iam.irsa_role(f"{name}-cluster-autoscaler-role", oidc, "kube-system", CLUSTER_AUTOSCALER_SA, opts)
    policy = aws.iam.RolePolicy(
        f"{name}-cluster-autoscaler-policy", role=role.id,
        policy=pulumi.Output.all(cluster.arn, cluster.name).apply(_autoscaler_policy),
        opts=opts)
    repo, chart, version = CLUSTER_AUTOSCALER_CHART
    values = {
        "cloudProvider": "aws",
        "awsRegion": region,
        "autoDiscovery": {"clusterName": cluster.name},
        "image": {"tag": CLUSTER_AUTOSCALER_IMAGES[kubernetes_version]},
        "rbac": {"serviceAccount": {"create": True, "name": CLUSTER_AUTOSCALER_SA,
                                    "annotations": {"eks.amazonaws.com/role-arn": role.arn}}},
        "extraArgs": {
            "balance-similar-node-groups": True,
            "expander": "least-waste",
            "skip-nodes-with-system-pods": False,
            # A GPU node costs dollars an hour: give it back after ten idle minutes.
            "scale-down-unneeded-time": "10m",
        },
        **_system_placement(),
    }
    return k8s.helm.v3.Release(
        f"{name}-cluster-autoscaler", name="cluster-autoscaler", chart=chart, version=version,
        repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=repo), namespace="kube-system", values=values,
        # The role's permissions before the pods that use them.
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(provider=provider,
                                                                       depends_on=[*depends_on, policy])))


def load_balancer_controller(name: str, cluster: aws.eks.Cluster, oidc: aws.iam.OpenIdConnectProvider,
                             vpc_id: pulumi.Input[str], region: str, partition: str, replicas: int,
                             opts: pulumi.ResourceOptions, provider: k8s.Provider,
                             depends_on: Sequence[pulumi.Resource]) -> k8s.helm.v3.Release:
    role = iam.irsa_role(f"{name}-lb-controller-role", oidc, "kube-system", LOAD_BALANCER_CONTROLLER_SA, opts)
    policy = aws.iam.RolePolicy(f"{name}-lb-controller-policy", role=role.id,
                                policy=iam.load_balancer_controller_policy(partition), opts=opts)
    repo, chart, version = LOAD_BALANCER_CONTROLLER_CHART
    values = {
        "clusterName": cluster.name,
        # With an IMDS hop limit of 1 the controller cannot look these up itself.
        "region": region,
        "vpcId": vpc_id,
        "replicaCount": replicas,
        "serviceAccount": {"create": True, "name": LOAD_BALANCER_CONTROLLER_SA,
                           "annotations": {"eks.amazonaws.com/role-arn": role.arn}},
        # Only services that ask for it (aws-load-balancer-type: external) get the controller.
        "enableServiceMutatorWebhook": False,
        # The network component owns every security group rule; the controller creates no group.
        "enableBackendSecurityGroup": False,
        **_system_placement(),
    }
    return k8s.helm.v3.Release(
        f"{name}-lb-controller", name="aws-load-balancer-controller", chart=chart, version=version,
        repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=repo), namespace="kube-system", values=values,
        # The role's permissions before the pods that use them.
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(provider=provider,
                                                                       depends_on=[*depends_on, policy])))


def storage_class(name: str, opts: pulumi.ResourceOptions, provider: k8s.Provider,
                  ebs_csi_driver: pulumi.Resource) -> k8s.storage.v1.StorageClass:
    """Encrypted gp3 EBS volumes (the account's default EBS key), made in the zone of the first pod that mounts
    one, growable in place, and deleted with their claim. It depends on the driver, so that on destroy
    everything using the class goes first, while the driver is still there to delete the volumes."""
    return k8s.storage.v1.StorageClass(
        f"{name}-gp3",
        metadata=k8s.meta.v1.ObjectMetaArgs(name=STORAGE_CLASS),
        provisioner=EBS_CSI_PROVISIONER,
        parameters={"type": "gp3", "encrypted": "true", "csi.storage.k8s.io/fstype": "ext4"},
        volume_binding_mode="WaitForFirstConsumer",
        allow_volume_expansion=True,
        reclaim_policy="Delete",
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(provider=provider,
                                                                       depends_on=[ebs_csi_driver])))


def container_logs(name: str, cluster_name: pulumi.Input[str], oidc: aws.iam.OpenIdConnectProvider, region: str,
                   opts: pulumi.ResourceOptions, provider: k8s.Provider,
                   depends_on: Sequence[pulumi.Resource]) -> k8s.helm.v3.Release:
    """Every container's stdout (the servers' JSON lines included), from every node, into one log group of the
    cluster's, a stream per container; Fluent Bit may write to that group only."""
    group = aws.cloudwatch.LogGroup(
        f"{name}-container-logs", name=pulumi.Output.concat("/aws/eks/", cluster_name, "/containers"),
        retention_in_days=CONTAINER_LOG_RETENTION_DAYS, opts=opts)
    role = iam.irsa_role(f"{name}-fluent-bit-role", oidc, "kube-system", FLUENT_BIT_SA, opts)
    policy = aws.iam.RolePolicy(f"{name}-fluent-bit-policy", role=role.id,
                                policy=group.arn.apply(iam.log_writer_policy), opts=opts)
    repo, chart, version = FLUENT_BIT_CHART
    values = {
        "serviceAccount": {"create": True, "name": FLUENT_BIT_SA,
                           "annotations": {"eks.amazonaws.com/role-arn": role.arn}},
        "cloudWatchLogs": {"enabled": True, "region": region, "logGroupName": group.name,
                           "logStreamTemplate": LOG_STREAM_TEMPLATE,
                           # The chart writes log_stream_prefix only when it is non-empty, and Fluent Bit's
                           # cloudwatch_logs refuses to start with neither it nor log_stream_name: the stream
                           # of a record the template cannot resolve (prefix + tag).
                           "logStreamPrefix": LOG_STREAM_FALLBACK_PREFIX,
                           # The group is the stack's (its retention, its deletion); the role may not create one.
                           "autoCreateGroup": False},
        "cloudWatch": {"enabled": False},
        # On every node, GPU nodes included, whatever their taints.
        "tolerations": [{"operator": "Exists"}],
    }
    return k8s.helm.v3.Release(
        f"{name}-fluent-bit", name="aws-for-fluent-bit", chart=chart, version=version,
        repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=repo), namespace="kube-system", values=values,
        # The role's permissions before the pods that use them.
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(provider=provider,
                                                                       depends_on=[*depends_on, policy])))
