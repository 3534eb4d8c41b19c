"""IAM documents: service trust, IRSA trust naming one service account, the add-ons' policies and cert-manager's."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_aws as aws


def partition_of(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def managed_policy(partition: str, name: str) -> str:
    return f"arn:{partition}:iam::aws:policy/{name}"


def service_trust(service: str, tag_session: bool = False) -> str:
    actions = ["sts:AssumeRole", "sts:TagSession"] if tag_session else "sts:AssumeRole"
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": actions, "Principal": {"Service": service}}]})


def irsa_trust(provider_arn: str, issuer_url: str, namespace: str, service_account: str) -> str:
    """Trust for exactly one Kubernetes service account, through the cluster's OIDC provider."""
    issuer = issuer_url.removeprefix("https://")
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Principal": {"Federated": provider_arn},
        "Condition": {"StringEquals": {
            f"{issuer}:sub": f"system:serviceaccount:{namespace}:{service_account}",
            f"{issuer}:aud": "sts.amazonaws.com",
        }},
    }]})


def irsa_role(name: str, provider: aws.iam.OpenIdConnectProvider, namespace: str, service_account: str,
              opts: pulumi.ResourceOptions) -> aws.iam.Role:
    def trust(values: list[str]) -> str:
        provider_arn, issuer_url = values
        return irsa_trust(provider_arn, issuer_url, namespace, service_account)

    return aws.iam.Role(name, assume_role_policy=pulumi.Output.all(provider.arn, provider.url).apply(trust),
                        description=f"IRSA role of {namespace}/{service_account}", opts=opts)


def bucket_reader_policy(bucket_arn: str) -> str:
    """Read the model bucket, nothing else."""
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "ListModels", "Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
         "Resource": bucket_arn},
        {"Sid": "ReadModels", "Effect": "Allow", "Action": ["s3:GetObject", "s3:GetObjectVersion"],
         "Resource": f"{bucket_arn}/*"},
    ]})


def acme_challenge_policy(partition: str, zone_id: str, challenge: str) -> str:
    """cert-manager's DNS-01 solver, given its hosted zone (so it looks none up): upsert and delete the one TXT
    record the ACME server reads, in that zone only, and follow each change until Route 53 has applied it.
    The record name is Route 53's normalized form: lower case, no trailing dot."""
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "ChallengeRecord", "Effect": "Allow", "Action": "route53:ChangeResourceRecordSets",
         "Resource": f"arn:{partition}:route53:::hostedzone/{zone_id}",
         # Every value of a multi-valued key must match, and all keys must: only this name, only TXT, only the
         # two actions cert-manager takes.
         "Condition": {"ForAllValues:StringEquals": {
             "route53:ChangeResourceRecordSetsNormalizedRecordNames": [challenge],
             "route53:ChangeResourceRecordSetsRecordTypes": ["TXT"],
             "route53:ChangeResourceRecordSetsActions": ["UPSERT", "DELETE"]}}},
        {"Sid": "ChangeStatus", "Effect": "Allow", "Action": "route53:GetChange",
         "Resource": f"arn:{partition}:route53:::change/*"},
    ]})


def log_writer_policy(log_group_arn: str) -> str:
    """Write log streams of one log group (its ARN ends in `:*`, which covers the streams)."""
    streams = log_group_arn if log_group_arn.endswith(":*") else f"{log_group_arn}:*"
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Action": ["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"],
        "Resource": streams,
    }]})


def kms_key_user_policy(key_arn: str) -> str:
    """What EKS needs of the secrets key, on that key only."""
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Resource": key_arn,
        "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ListGrants", "kms:DescribeKey"]}]})


def tls_only_bucket_policy(bucket_arn: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
        "Resource": [bucket_arn, f"{bucket_arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }]})


def cluster_autoscaler_policy(cluster_arn: str, cluster_name: str) -> str:
    """The cluster autoscaler's documented least privilege: describe everything, but change only the
    Auto Scaling groups tagged as this cluster's, and read only this cluster's managed node groups
    (their labels and taints are how it plans a scale-up from zero)."""
    nodegroups = cluster_arn.replace(":cluster/", ":nodegroup/", 1) + "/*/*"
    statements: list[dict[str, Any]] = [
        {"Sid": "Describe", "Effect": "Allow", "Resource": "*", "Action": [
            "autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeAutoScalingInstances",
            "autoscaling:DescribeLaunchConfigurations", "autoscaling:DescribeScalingActivities",
            "autoscaling:DescribeTags", "ec2:DescribeImages", "ec2:DescribeInstanceTypes",
            "ec2:DescribeLaunchTemplateVersions", "ec2:GetInstanceTypesFromInstanceRequirements"]},
        {"Sid": "DescribeOwnNodeGroups", "Effect": "Allow", "Action": "eks:DescribeNodegroup",
         "Resource": nodegroups},
        {"Sid": "ScaleOwnGroups", "Effect": "Allow", "Resource": "*",
         "Action": ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"],
         "Condition": {"StringEquals": {
             f"aws:ResourceTag/k8s.io/cluster-autoscaler/{cluster_name}": "owned"}}},
    ]
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


def load_balancer_controller_policy(partition: str) -> str:
    """The AWS Load Balancer Controller's upstream policy, cut to what a Network Load Balancer with
    security groups we manage needs: no ALB, WAF, Shield, ACM or Cognito, and no security group writes
    (the service annotations hand it our group and keep it off the nodes' rules). Writes are limited to
    load balancers and target groups that carry its cluster tag."""
    elb = f"arn:{partition}:elasticloadbalancing:*:*"
    tagged_request = {"Null": {"aws:RequestTag/elbv2.k8s.aws/cluster": "false"}}
    tagged_resource = {"Null": {"aws:ResourceTag/elbv2.k8s.aws/cluster": "false"}}
    ours = [f"{elb}:targetgroup/*/*", f"{elb}:loadbalancer/net/*/*"]
    statements: list[dict[str, Any]] = [
        {"Sid": "ServiceLinkedRole", "Effect": "Allow", "Action": "iam:CreateServiceLinkedRole",
         "Resource": "*",
         "Condition": {"StringEquals": {"iam:AWSServiceName": "elasticloadbalancing.amazonaws.com"}}},
        {"Sid": "Describe", "Effect": "Allow", "Resource": "*", "Action": [
            "ec2:DescribeAccountAttributes", "ec2:DescribeAddresses", "ec2:DescribeAvailabilityZones",
            "ec2:DescribeInternetGateways", "ec2:DescribeVpcs", "ec2:DescribeSubnets",
            "ec2:DescribeSecurityGroups", "ec2:DescribeInstances", "ec2:DescribeNetworkInterfaces",
            "ec2:DescribeTags", "ec2:DescribeRouteTables", "ec2:GetSecurityGroupsForVpc",
            "elasticloadbalancing:DescribeLoadBalancers", "elasticloadbalancing:DescribeLoadBalancerAttributes",
            "elasticloadbalancing:DescribeListeners", "elasticloadbalancing:DescribeListenerAttributes",
            "elasticloadbalancing:DescribeTargetGroups", "elasticloadbalancing:DescribeTargetGroupAttributes",
            "elasticloadbalancing:DescribeTargetHealth", "elasticloadbalancing:DescribeTags",
            "elasticloadbalancing:DescribeCapacityReservation"]},
        {"Sid": "CreateTagged", "Effect": "Allow", "Resource": "*", "Condition": tagged_request,
         "Action": ["elasticloadbalancing:CreateLoadBalancer", "elasticloadbalancing:CreateTargetGroup"]},
        {"Sid": "TagOnCreate", "Effect": "Allow", "Action": "elasticloadbalancing:AddTags", "Resource": ours,
         "Condition": {"StringEquals": {"elasticloadbalancing:CreateAction": [
             "CreateTargetGroup", "CreateLoadBalancer"]}, **tagged_request}},
        {"Sid": "Listeners", "Effect": "Allow", "Resource": "*", "Action": [
            "elasticloadbalancing:CreateListener", "elasticloadbalancing:DeleteListener",
            "elasticloadbalancing:ModifyListener", "elasticloadbalancing:ModifyListenerAttributes"]},
        # The controller tags each listener as it creates it: CreateListener with tags also needs AddTags on
        # the new listener, which carries no tag yet for a ResourceTag condition to match (as upstream).
        {"Sid": "ListenerTags", "Effect": "Allow", "Resource": f"{elb}:listener/net/*/*/*",
         "Action": ["elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags"]},
        {"Sid": "ManageOwn", "Effect": "Allow", "Resource": "*", "Condition": tagged_resource, "Action": [
            "elasticloadbalancing:ModifyLoadBalancerAttributes", "elasticloadbalancing:SetIpAddressType",
            "elasticloadbalancing:SetSecurityGroups", "elasticloadbalancing:SetSubnets",
            "elasticloadbalancing:DeleteLoadBalancer", "elasticloadbalancing:ModifyTargetGroup",
            "elasticloadbalancing:ModifyTargetGroupAttributes", "elasticloadbalancing:DeleteTargetGroup",
            "elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags",
            "elasticloadbalancing:ModifyCapacityReservation"]},
        {"Sid": "Targets", "Effect": "Allow", "Resource": f"{elb}:targetgroup/*/*",
         "Action": ["elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets"]},
    ]
    return json.dumps({"Version": "2012-10-17", "Statement": statements})
