"""Hostile cases: one minimal resource each, with the verdict the pack must reach.

The traps that other rule sets miss (IPv6 world ranges, /0 with host bits, ranges that add up to the
world, GCP rules with no ports or no source, Azure's Internet/Any/* and plural fields, protocol -1,
standalone rule resources, ICMP types read as ports), and the legitimate cases that must pass.
"""

from __future__ import annotations

from typing import Any

import pytest
from pulumi_policy.proxy import UNKNOWN_ARRAY_VALUE, UNKNOWN_STRING_VALUE

from tests.policies.harness import Case, assert_case, check_resource

SG = "aws:ec2/securityGroup:SecurityGroup"
SGR = "aws:ec2/securityGroupRule:SecurityGroupRule"
VIN = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
EKS = "aws:eks/cluster:Cluster"
LT = "aws:ec2/launchTemplate:LaunchTemplate"
FW = "gcp:compute/firewall:Firewall"
GKE = "gcp:container/cluster:Cluster"
GKE_POOL = "gcp:container/nodePool:NodePool"
NSG = "azure-native:network:NetworkSecurityGroup"
NSR = "azure-native:network:SecurityRule"
AKS = "azure-native:containerservice:ManagedCluster"
AKS_POOL = "azure-native:containerservice:AgentPool"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
STATEFULSET = "kubernetes:apps/v1:StatefulSet"
DAEMONSET = "kubernetes:apps/v1:DaemonSet"
JOB = "kubernetes:batch/v1:Job"
CRONJOB = "kubernetes:batch/v1:CronJob"
POD = "kubernetes:core/v1:Pod"
SERVICE = "kubernetes:core/v1:Service"

ADMIN, ALL, DATA, ALLOW = "no-world-admin-ports", "no-world-all-ports", "no-world-data-ports", "world-ingress-allowlist"
ENDPOINT, NODES = "cluster-endpoint-restricted", "nodes-no-public-ip"


def sg(protocol: Any, from_port: Any, to_port: Any, **sources: Any) -> dict[str, Any]:
    return {"ingress": [{"protocol": protocol, "fromPort": from_port, "toPort": to_port, **sources}]}


def fw(allows: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
    return {"network": "vpc", "allows": allows, **more}


def nsr(source: Any = "Internet", ports: Any = "22", protocol: str = "Tcp", access: str = "Allow",
        direction: str = "Inbound", plural: bool = False) -> dict[str, Any]:
    rule: dict[str, Any] = {"access": access, "direction": direction, "protocol": protocol, "priority": 100.0,
                            "sourcePortRange": "*", "destinationAddressPrefix": "*"}
    rule["sourceAddressPrefixes" if plural else "sourceAddressPrefix"] = source
    rule["destinationPortRanges" if isinstance(ports, list) else "destinationPortRange"] = ports
    return rule


def nsg(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"resourceGroupName": "rg", "securityRules": [{"name": f"r{i}", **r} for i, r in enumerate(rules)]}


SECURE = {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "readOnlyRootFilesystem": True,
          "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def container(name: str = "app", image: str = "registry.example/app:1.2.3", **ctx: Any) -> dict[str, Any]:
    return {"name": name, "image": image, "securityContext": {**SECURE, **ctx}}


def deployment(*containers: dict[str, Any], namespace: str = "apps", **pod: Any) -> dict[str, Any]:
    return {"metadata": {"name": "app", "namespace": namespace},
            "spec": {"template": {"spec": {"containers": list(containers), **pod}}}}


def service(type_: str = "LoadBalancer", annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "web", "annotations": annotations or {}},
            "spec": {"type": type_, "ports": [{"port": 443.0, "targetPort": 8000.0}], **spec}}


WORLD4 = {"cidrBlocks": ["0.0.0.0/0"]}

CASES = [
    # --- AWS security groups, inline ---
    Case("aws-sg-ssh-world", ADMIN, SG, sg("tcp", 22.0, 22.0, **WORLD4), "violation", "22"),
    Case("aws-sg-ssh-ipv6-world", ADMIN, SG, sg("tcp", 22.0, 22.0, ipv6CidrBlocks=["::/0"]), "violation", "::/0"),
    Case("aws-sg-ssh-ipv6-spelled-0", ADMIN, SG, sg("tcp", 22.0, 22.0, ipv6CidrBlocks=["::0/0"]), "violation"),
    Case("aws-sg-slash0-with-host-bits", ADMIN, SG, sg("tcp", 22.0, 22.0, cidrBlocks=["1.2.3.4/0"]), "violation"),
    Case("aws-sg-halves-add-up-to-world", ADMIN, SG,
         sg("tcp", 22.0, 22.0, cidrBlocks=["0.0.0.0/1", "128.0.0.0/1"]), "violation"),
    Case("aws-sg-range-covers-rdp", ADMIN, SG, sg("tcp", 3000.0, 4000.0, **WORLD4), "violation", "3389"),
    Case("aws-sg-protocol-minus-1-admin", ADMIN, SG, sg("-1", 0.0, 0.0, **WORLD4), "violation", "every protocol"),
    Case("aws-sg-protocol-minus-1-all", ALL, SG, sg("-1", 0.0, 0.0, **WORLD4), "violation", "every protocol"),
    Case("aws-sg-ports-as-strings", ADMIN, SG, sg("tcp", "5985", "5986", **WORLD4), "violation", "5985-5986"),
    Case("aws-sg-protocol-number-6", ADMIN, SG, sg("6", 6443.0, 6443.0, **WORLD4), "violation", "6443"),
    Case("aws-sg-tcp-all-ports", ALL, SG, sg("TCP", 0.0, 65535.0, **WORLD4), "violation", "every tcp port"),
    Case("aws-sg-extra-admin-port", ADMIN, SG, sg("tcp", 8443.0, 8443.0, **WORLD4), "violation", "8443",
         {"extraAdminPorts": [8443]}),
    Case("aws-sg-jupyter-world", DATA, SG, sg("tcp", 8888.0, 8888.0, **WORLD4), "violation", "8888"),
    Case("aws-sg-ray-dashboard-world", DATA, SG, sg("tcp", 8265.0, 8265.0, **WORLD4), "violation", "8265"),
    Case("aws-default-sg-all-from-world", ALL, "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup",
         sg("-1", 0.0, 0.0, ipv6CidrBlocks=["::/0"]), "violation"),
    Case("aws-sg-ssh-ipv4-mapped-ipv6-world", ADMIN, SG, sg("tcp", 22.0, 22.0, ipv6CidrBlocks=["::ffff:0:0/96"]),
         "violation", "::ffff:0:0/96"),
    Case("aws-sg-ipv4-mapped-half-plus-ipv4-half", ADMIN, SG,
         sg("tcp", 22.0, 22.0, cidrBlocks=["128.0.0.0/1"], ipv6CidrBlocks=["::ffff:0.0.0.0/97"]), "violation"),
    Case("aws-sg-ipv4-mapped-private-range", ADMIN, SG, sg("tcp", 22.0, 22.0, ipv6CidrBlocks=["::ffff:10.0.0.0/104"]),
         "pass"),
    Case("aws-sg-world-halves-split-over-entries", ADMIN, SG,
         {"ingress": [{"protocol": "tcp", "fromPort": 22.0, "toPort": 22.0, "cidrBlocks": ["0.0.0.0/1"]},
                      {"protocol": "tcp", "fromPort": 20.0, "toPort": 25.0, "cidrBlocks": ["128.0.0.0/1"]}]},
         "violation", "ingress[0], ingress[1] together open admin port(s) 22"),
    Case("aws-sg-any-protocol-half-and-tcp-half", ADMIN, SG,
         {"ingress": [{"protocol": "-1", "fromPort": 0.0, "toPort": 0.0, "cidrBlocks": ["0.0.0.0/1"]},
                      {"protocol": "tcp", "fromPort": 3389.0, "toPort": 3389.0, "cidrBlocks": ["128.0.0.0/1"]}]},
         "violation", "3389 (tcp)"),
    Case("aws-sg-all-ports-split-over-entries", ALL, SG,
         {"ingress": [{"protocol": "tcp", "fromPort": 0.0, "toPort": 30000.0, **WORLD4},
                      {"protocol": "tcp", "fromPort": 30001.0, "toPort": 65535.0, **WORLD4}]},
         "violation", "every tcp port"),
    Case("aws-sg-private-ranges-over-entries", ADMIN, SG,
         {"ingress": [{"protocol": "tcp", "fromPort": 22.0, "toPort": 22.0, "cidrBlocks": ["10.0.0.0/8"]},
                      {"protocol": "tcp", "fromPort": 22.0, "toPort": 22.0, "cidrBlocks": ["192.168.0.0/16"]}]},
         "pass"),
    Case("aws-sg-halves-on-different-ports", ADMIN, SG,
         {"ingress": [{"protocol": "tcp", "fromPort": 22.0, "toPort": 22.0, "cidrBlocks": ["0.0.0.0/1"]},
                      {"protocol": "tcp", "fromPort": 443.0, "toPort": 443.0, "cidrBlocks": ["128.0.0.0/1"]}]},
         "pass"),
    Case("aws-sg-halves-over-entries-egress-ignored", ADMIN, SG,
         {"ingress": [{"protocol": "tcp", "fromPort": 22.0, "toPort": 22.0, "cidrBlocks": ["0.0.0.0/1"]}],
          "egress": [{"protocol": "tcp", "fromPort": 22.0, "toPort": 22.0, "cidrBlocks": ["128.0.0.0/1"]}]},
         "pass"),
    Case("aws-sg-ssh-private-cidr", ADMIN, SG, sg("tcp", 22.0, 22.0, cidrBlocks=["10.0.0.0/8"]), "pass"),
    Case("aws-sg-ssh-from-security-group", ADMIN, SG, sg("tcp", 22.0, 22.0, securityGroups=["sg-0abc"]), "pass"),
    Case("aws-sg-ssh-from-prefix-list", ADMIN, SG, sg("tcp", 22.0, 22.0, prefixListIds=["pl-0abc"]), "pass"),
    Case("aws-sg-egress-everything", ALL, SG,
         {"egress": [{"protocol": "-1", "fromPort": 0.0, "toPort": 0.0, **WORLD4}]}, "pass"),
    Case("aws-sg-icmp-type-22-is-not-port-22", ADMIN, SG, sg("icmp", 22.0, 22.0, **WORLD4), "pass"),
    Case("aws-sg-icmp-world-allowlisted", ALLOW, SG, sg("icmp", 8.0, 0.0, **WORLD4), "pass"),
    Case("aws-sg-https-world-allowlisted", ALLOW, SG, sg("tcp", 443.0, 443.0, **WORLD4), "pass"),
    Case("aws-sg-8080-world-not-allowlisted", ALLOW, SG, sg("tcp", 8080.0, 8080.0, **WORLD4), "violation", "8080"),
    Case("aws-sg-gre-is-not-ssh", ADMIN, SG, sg("47", 0.0, 0.0, **WORLD4), "pass"),
    Case("aws-sg-gre-world-not-allowlisted", ALLOW, SG, sg("47", 0.0, 0.0, **WORLD4), "violation", "47"),
    Case("aws-sg-unknown-cidrs", ADMIN, SG, sg("tcp", 22.0, 22.0, cidrBlocks=UNKNOWN_ARRAY_VALUE), "unknown"),
    Case("aws-sg-unknown-cidrs-fail-closed", ADMIN, SG, sg("tcp", 22.0, 22.0, cidrBlocks=UNKNOWN_ARRAY_VALUE),
         "violation", "cannot verify", {"failClosed": True}),
    Case("aws-sg-unknown-cidr-on-harmless-port", ADMIN, SG,
         sg("tcp", 443.0, 443.0, cidrBlocks=[UNKNOWN_STRING_VALUE]), "pass"),
    Case("aws-sg-unknown-port-world", ADMIN, SG, sg("tcp", UNKNOWN_STRING_VALUE, 22.0, **WORLD4), "unknown"),
    Case("aws-sg-unknown-icmp-type-is-no-port", ADMIN, SG, sg("icmp", UNKNOWN_STRING_VALUE, 0.0, **WORLD4), "pass"),
    Case("aws-sg-unknown-port-private", ADMIN, SG,
         sg("tcp", UNKNOWN_STRING_VALUE, 22.0, cidrBlocks=["10.0.0.0/8"]), "pass"),
    Case("aws-sg-exempt-with-reason", ADMIN, SG, sg("tcp", 22.0, 22.0, **WORLD4), "pass", "",
         {"exemptions": [{"resource": "subject", "reason": "honeypot, isolated account"}]}),
    Case("aws-sg-exempt-without-reason", ADMIN, SG, sg("tcp", 22.0, 22.0, **WORLD4), "violation", "no reason",
         {"exemptions": [{"resource": "subject", "reason": " "}]}),
    # --- AWS standalone rules ---
    Case("aws-sgr-ingress-ssh-world", ADMIN, SGR,
         {"type": "ingress", "protocol": "tcp", "fromPort": 22.0, "toPort": 22.0, **WORLD4}, "violation"),
    Case("aws-sgr-egress-ssh-world", ADMIN, SGR,
         {"type": "egress", "protocol": "tcp", "fromPort": 22.0, "toPort": 22.0, **WORLD4}, "pass"),
    Case("aws-sgr-from-security-group", ADMIN, SGR,
         {"type": "ingress", "protocol": "tcp", "fromPort": 22.0, "toPort": 22.0, "sourceSecurityGroupId": "sg-1"},
         "pass"),
    Case("aws-vpc-ingress-ipv6-any-protocol", ALL, VIN, {"ipProtocol": "-1", "cidrIpv6": "::/0"}, "violation"),
    Case("aws-vpc-ingress-redis-world", DATA, VIN,
         {"ipProtocol": "tcp", "fromPort": 6379.0, "toPort": 6379.0, "cidrIpv4": "0.0.0.0/0"}, "violation", "6379"),
    Case("aws-vpc-ingress-prefix-list", ADMIN, VIN,
         {"ipProtocol": "tcp", "fromPort": 22.0, "toPort": 22.0, "prefixListId": "pl-0abc"}, "pass"),
    Case("aws-eks-node-group-ssh-default-world", ADMIN, NODE_GROUP,
         {"remoteAccess": {"ec2SshKey": "ops"}, "scalingConfig": {"maxSize": 2.0}}, "violation", "22"),
    Case("aws-eks-node-group-ssh-from-group", ADMIN, NODE_GROUP,
         {"remoteAccess": {"ec2SshKey": "ops", "sourceSecurityGroupIds": ["sg-1"]}}, "pass"),
    # --- GCP firewalls ---
    Case("gcp-fw-no-ports-means-all", ADMIN, FW, fw([{"protocol": "tcp"}], sourceRanges=["0.0.0.0/0"]),
         "violation", "22"),
    Case("gcp-fw-no-source-means-world", ADMIN, FW, fw([{"protocol": "tcp", "ports": ["22"]}]), "violation",
         "no source given"),
    Case("gcp-fw-source-tags-only", ADMIN, FW, fw([{"protocol": "tcp", "ports": ["22"]}], sourceTags=["bastion"]),
         "pass"),
    Case("gcp-fw-only-source-tags-unknown", ADMIN, FW,
         fw([{"protocol": "tcp", "ports": ["22"]}], sourceTags=UNKNOWN_ARRAY_VALUE), "unknown"),
    Case("gcp-fw-known-tag-beside-unknown-accounts", ADMIN, FW,
         fw([{"protocol": "tcp", "ports": ["22"]}], sourceTags=["bastion"], sourceServiceAccounts=UNKNOWN_ARRAY_VALUE),
         "pass"),
    Case("gcp-fw-world-range-beside-tags", ADMIN, FW,
         fw([{"protocol": "tcp", "ports": ["22"]}], sourceTags=["bastion"], sourceRanges=["0.0.0.0/0"]),
         "violation"),
    Case("gcp-fw-disabled", ADMIN, FW, fw([{"protocol": "tcp", "ports": ["22"]}], sourceRanges=["0.0.0.0/0"],
                                           disabled=True), "pass"),
    Case("gcp-fw-deny-rule", ALL, FW, {"denies": [{"protocol": "all"}], "sourceRanges": ["0.0.0.0/0"]}, "pass"),
    Case("gcp-fw-egress", ALL, FW, fw([{"protocol": "all"}], direction="EGRESS", destinationRanges=["0.0.0.0/0"]),
         "pass"),
    Case("gcp-fw-protocol-all", ALL, FW, fw([{"protocol": "all"}], sourceRanges=["0.0.0.0/0"]), "violation"),
    Case("gcp-fw-port-range-string", ADMIN, FW, fw([{"protocol": "tcp", "ports": ["20-25"]}],
                                                    sourceRanges=["0.0.0.0/0"]), "violation", "22"),
    Case("gcp-fw-ipv6-world-rdp", ADMIN, FW, fw([{"protocol": "tcp", "ports": ["3389"]}], sourceRanges=["::/0"]),
         "violation", "3389"),
    Case("gcp-fw-tensorboard-world", DATA, FW, fw([{"protocol": "tcp", "ports": ["6006"]}],
                                                   sourceRanges=["0.0.0.0/0"]), "violation", "6006"),
    Case("gcp-fw-halves-over-allows-all-ports", ALL, FW,
         fw([{"protocol": "tcp", "ports": ["1-40000"]}, {"protocol": "tcp", "ports": ["40001-65535"]}],
            sourceRanges=["::/0"]), "violation", "every tcp port"),
    Case("gcp-network-policy-rule-ssh-world", ADMIN, "gcp:compute/networkFirewallPolicyRule:NetworkFirewallPolicyRule",
         {"action": "allow", "direction": "INGRESS", "priority": 1000.0,
          "match": {"srcIpRanges": ["0.0.0.0/0"], "layer4Configs": [{"ipProtocol": "tcp", "ports": ["22"]}]}},
         "violation", "match.layer4Configs[0] opens admin port(s) 22"),
    Case("gcp-region-policy-rule-all-world", ALL,
         "gcp:compute/regionNetworkFirewallPolicyRule:RegionNetworkFirewallPolicyRule",
         {"action": "apply_security_profile_group", "direction": "INGRESS",
          "match": {"srcIpRanges": ["::/0"], "layer4Configs": [{"ipProtocol": "all"}]}}, "violation"),
    Case("gcp-org-policy-rule-deny", ALL, "gcp:compute/firewallPolicyRule:FirewallPolicyRule",
         {"action": "deny", "direction": "INGRESS",
          "match": {"srcIpRanges": ["0.0.0.0/0"], "layer4Configs": [{"ipProtocol": "all"}]}}, "pass"),
    Case("gcp-policy-rule-region-codes-not-world", ADMIN,
         "gcp:compute/networkFirewallPolicyRule:NetworkFirewallPolicyRule",
         {"action": "allow", "direction": "INGRESS",
          "match": {"srcRegionCodes": ["DE"], "layer4Configs": [{"ipProtocol": "tcp", "ports": ["22"]}]}}, "pass"),
    Case("gcp-fw-icmp-world", ALLOW, FW, fw([{"protocol": "icmp"}], sourceRanges=["0.0.0.0/0"]), "pass"),
    Case("gcp-fw-https-from-google-lb-ranges", ALLOW, FW,
         fw([{"protocol": "tcp", "ports": ["443"]}], sourceRanges=["130.211.0.0/22", "35.191.0.0/16"]), "pass"),
    Case("gcp-fw-unknown-source-ranges", ADMIN, FW,
         fw([{"protocol": "tcp", "ports": ["22"]}], sourceRanges=UNKNOWN_ARRAY_VALUE), "unknown"),
    Case("gcp-fw-unknown-port-in-list", ADMIN, FW,
         fw([{"protocol": "tcp", "ports": ["443", UNKNOWN_STRING_VALUE]}], sourceRanges=["0.0.0.0/0"]), "unknown"),
    Case("gcp-fw-unknown-direction-world-ssh", ADMIN, FW,
         fw([{"protocol": "tcp", "ports": ["22"]}], sourceRanges=["::/0"], direction=UNKNOWN_STRING_VALUE), "unknown"),
    # --- Azure ---
    Case("azure-nsg-internet-tag", ADMIN, NSG, nsg(nsr("Internet", "22")), "violation", "22"),
    Case("azure-nsg-star", ADMIN, NSG, nsg(nsr("*", "3389")), "violation", "3389"),
    Case("azure-nsg-any-mixed-case", ADMIN, NSG, nsg(nsr("ANY", "22")), "violation"),
    Case("azure-nsg-world-in-plural-field", ADMIN, NSG,
         nsg(nsr(["10.0.0.0/8", "0.0.0.0/0"], ["22"], plural=True)), "violation", "0.0.0.0/0"),
    Case("azure-nsg-lowercase-allow-inbound", ADMIN, NSG, nsg(nsr("Internet", "22", access="allow",
                                                                  direction="inbound")), "violation"),
    Case("azure-nsg-deny-rule", ADMIN, NSG, nsg(nsr("*", "22", access="Deny")), "pass"),
    Case("azure-nsg-world-halves-over-rules", ADMIN, NSG,
         nsg(nsr(["0.0.0.0/1"], ["22"], plural=True), nsr("128.0.0.0/1", "*", protocol="*")), "violation",
         "securityRules[0] (r0), securityRules[1] (r1) together open admin port(s) 22"),
    Case("azure-nsg-halves-one-rule-denied", ADMIN, NSG,
         nsg(nsr("0.0.0.0/1", "22"), nsr("128.0.0.0/1", "22", access="Deny")), "pass"),
    Case("azure-nsg-outbound", ADMIN, NSG, nsg(nsr("*", "22", direction="Outbound")), "pass"),
    Case("azure-nsg-virtual-network-tag", ADMIN, NSG, nsg(nsr("VirtualNetwork", "22")), "pass"),
    Case("azure-rule-any-protocol", ALL, NSR, nsr("Internet", "443", protocol="*"), "violation", "every protocol"),
    Case("azure-rule-star-ports", ALL, NSR, nsr("Internet", "*"), "violation", "every tcp port"),
    Case("azure-rule-port-range-covers-rdp", ADMIN, NSR, nsr("Internet", "3380-3390"), "violation", "3389"),
    Case("azure-rule-application-security-group", ADMIN, NSR,
         {**{k: v for k, v in nsr().items() if k != "sourceAddressPrefix"},
          "sourceApplicationSecurityGroups": [{"id": "/subscriptions/x/asg/ops"}]}, "pass"),
    Case("azure-rule-unknown-protocol", ADMIN, NSR, {**nsr("Internet", "22"), "protocol": UNKNOWN_STRING_VALUE},
         "unknown"),
    Case("azure-rule-https-from-internet", ALLOW, NSR, nsr("Internet", "443"), "pass"),
    Case("azure-rule-mlflow-world", DATA, NSR, nsr("0.0.0.0/0", "5000"), "violation", "5000"),
    # --- cluster endpoints and node addresses ---
    Case("eks-endpoint-default-public", ENDPOINT, EKS, {"vpcConfig": {"subnetIds": ["subnet-1"]}}, "violation",
         "0.0.0.0/0"),
    Case("eks-endpoint-world-cidr", ENDPOINT, EKS,
         {"vpcConfig": {"endpointPublicAccess": True, "publicAccessCidrs": ["::/0"]}}, "violation"),
    Case("eks-endpoint-listed-cidr", ENDPOINT, EKS,
         {"vpcConfig": {"endpointPublicAccess": True, "publicAccessCidrs": ["203.0.113.0/24"]}}, "pass"),
    Case("eks-endpoint-private", ENDPOINT, EKS,
         {"vpcConfig": {"endpointPublicAccess": False, "endpointPrivateAccess": True}}, "pass"),
    Case("gke-endpoint-no-authorized-networks", ENDPOINT, GKE, {"location": "us-central1"}, "violation"),
    Case("gke-endpoint-authorized-networks", ENDPOINT, GKE,
         {"masterAuthorizedNetworksConfig": {"cidrBlocks": [{"cidrBlock": "203.0.113.0/24"}]}}, "pass"),
    Case("gke-endpoint-authorized-world", ENDPOINT, GKE,
         {"masterAuthorizedNetworksConfig": {"cidrBlocks": [{"cidrBlock": "0.0.0.0/0"}]}}, "violation"),
    Case("gke-endpoint-private", ENDPOINT, GKE,
         {"privateClusterConfig": {"enablePrivateEndpoint": True, "enablePrivateNodes": True}}, "pass"),
    Case("aks-endpoint-public-default", ENDPOINT, AKS, {"dnsPrefix": "x"}, "violation"),
    Case("aks-endpoint-private", ENDPOINT, AKS, {"apiServerAccessProfile": {"enablePrivateCluster": True}}, "pass"),
    Case("aks-endpoint-world-range", ENDPOINT, AKS,
         {"apiServerAccessProfile": {"authorizedIPRanges": ["0.0.0.0/0"]}}, "violation"),
    Case("aks-endpoint-listed-range", ENDPOINT, AKS,
         {"apiServerAccessProfile": {"authorizedIPRanges": ["203.0.113.7/32"]}}, "pass"),
    Case("launch-template-public-ip-string", NODES, LT,
         {"networkInterfaces": [{"associatePublicIpAddress": "true"}]}, "violation"),
    Case("launch-template-private", NODES, LT,
         {"networkInterfaces": [{"associatePublicIpAddress": "false"}]}, "pass"),
    Case("aks-pool-node-public-ip", NODES, AKS_POOL, {"vmSize": "Standard_NC4as_T4_v3", "enableNodePublicIP": True},
         "violation"),
    Case("aks-cluster-profile-public-ip", NODES, AKS,
         {"agentPoolProfiles": [{"name": "system"}, {"name": "gpu", "enableNodePublicIP": True}]}, "violation",
         "agentPoolProfiles[1]"),
    Case("gke-cluster-public-nodes", NODES, GKE, {"location": "us-central1"}, "violation"),
    Case("gke-cluster-private-nodes", NODES, GKE, {"privateClusterConfig": {"enablePrivateNodes": True}}, "pass"),
    Case("gke-pool-opts-out-of-private-nodes", NODES, GKE_POOL, {"networkConfig": {"enablePrivateNodes": False}},
         "violation"),
    Case("eks-no-secrets-encryption", "eks-secrets-encryption", EKS, {"vpcConfig": {}}, "violation"),
    Case("eks-secrets-encryption", "eks-secrets-encryption", EKS,
         {"encryptionConfig": {"resources": ["secrets"], "provider": {"keyArn": "arn:kms"}}}, "pass"),
    Case("eks-logs-missing-audit", "eks-control-plane-logs", EKS, {"enabledClusterLogTypes": ["api"]}, "violation",
         "audit"),
    # --- Kubernetes workloads ---
    Case("k8s-deployment-privileged", "k8s-no-privileged", DEPLOYMENT, deployment(container(privileged=True)),
         "violation", "privileged"),
    Case("k8s-cronjob-init-container-privileged", "k8s-no-privileged", CRONJOB,
         {"spec": {"jobTemplate": {"spec": {"template": {"spec": {
             "initContainers": [container("init", privileged=True)], "containers": [container()]}}}}}},
         "violation", "initContainers[0] (init)"),
    Case("k8s-deployment-sys-admin", "k8s-no-privileged", DEPLOYMENT,
         deployment(container(capabilities={"add": ["sys_admin"], "drop": ["ALL"]})), "violation", "SYS_ADMIN"),
    Case("k8s-pod-cap-prefixed-sys-admin", "k8s-no-privileged", POD,
         {"spec": {"containers": [container(capabilities={"add": ["CAP_SYS_ADMIN"], "drop": ["ALL"]})]}},
         "violation", "SYS_ADMIN"),
    Case("k8s-pod-harmless-capability", "k8s-no-privileged", POD,
         {"spec": {"containers": [container(capabilities={"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]})]}},
         "pass"),
    Case("k8s-privileged-exempt-namespace", "k8s-no-privileged", DAEMONSET,
         deployment(container(privileged=True), namespace="gpu-operator"), "pass", "",
         {"exemptions": [{"namespace": "gpu-operator", "reason": "the NVIDIA driver installer loads kernel modules"}]}),
    Case("k8s-daemonset-host-network", "k8s-no-host-namespaces", DAEMONSET,
         deployment(container(), hostNetwork=True), "violation", "hostNetwork"),
    Case("k8s-pod-host-pid", "k8s-no-host-namespaces", POD,
         {"spec": {"containers": [container()], "hostPID": True}}, "violation", "hostPID"),
    Case("k8s-pod-host-port", "k8s-no-host-ports", POD,
         {"spec": {"containers": [{**container(), "ports": [{"containerPort": 80.0, "hostPort": 8080.0}]}]}},
         "violation", "8080"),
    Case("k8s-job-escalation-unset", "k8s-no-privilege-escalation", JOB,
         {"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "a:1"}]}}}}, "violation", "unset"),
    Case("k8s-statefulset-escalation-off", "k8s-no-privilege-escalation", STATEFULSET, deployment(container()),
         "pass"),
    Case("k8s-ephemeral-container-escalation", "k8s-no-privilege-escalation", POD,
         {"spec": {"containers": [container()],
                   "ephemeralContainers": [container("debug", allowPrivilegeEscalation=True)]}}, "violation",
         "ephemeralContainers[0]"),
    Case("k8s-deployment-patch-privileged", "k8s-no-privileged", "kubernetes:apps/v1:DeploymentPatch",
         {"metadata": {"name": "existing"}, "spec": {"template": {"spec": {"containers": [
             {"name": "app", "securityContext": {"privileged": True}}]}}}}, "violation", "privileged"),
    Case("k8s-daemonset-patch-host-network", "k8s-no-host-namespaces", "kubernetes:apps/v1:DaemonSetPatch",
         {"metadata": {"name": "existing"}, "spec": {"template": {"spec": {"hostNetwork": True}}}}, "violation",
         "hostNetwork"),
    Case("k8s-cronjob-patch-escalation-on", "k8s-no-privilege-escalation", "kubernetes:batch/v1:CronJobPatch",
         {"metadata": {"name": "existing"}, "spec": {"jobTemplate": {"spec": {"template": {"spec": {
             "containers": [{"name": "a", "securityContext": {"allowPrivilegeEscalation": True}}]}}}}}},
         "violation", "True"),
    Case("k8s-deployment-patch-leaves-escalation-alone", "k8s-no-privilege-escalation",
         "kubernetes:apps/v1:DeploymentPatch",
         {"metadata": {"name": "existing"}, "spec": {"template": {"spec": {"containers": [
             {"name": "app", "image": "app:1.2.4"}]}}}}, "pass"),
    Case("k8s-hardened", "k8s-hardened-containers", DEPLOYMENT, deployment(container()), "pass"),
    Case("k8s-hardened-pod-level-defaults", "k8s-hardened-containers", DEPLOYMENT,
         deployment({"name": "a", "image": "a:1", "securityContext": {
             "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}},
             securityContext={"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}), "pass"),
    Case("k8s-runs-as-root", "k8s-hardened-containers", DEPLOYMENT,
         deployment(container(runAsNonRoot=True, runAsUser=0.0)), "violation", "runAsNonRoot"),
    Case("k8s-image-latest", "k8s-image-pinned", DEPLOYMENT, deployment(container(image="nginx:latest")),
         "violation"),
    Case("k8s-image-registry-port-no-tag", "k8s-image-pinned", DEPLOYMENT,
         deployment(container(image="registry.local:5000/app")), "violation"),
    Case("k8s-image-digest", "k8s-image-pinned", DEPLOYMENT,
         deployment(container(image="app@sha256:" + "a" * 64)), "pass"),
    Case("k8s-lb-no-source-ranges", "k8s-loadbalancer-restricted", SERVICE, service(), "violation"),
    Case("k8s-lb-world-ipv6", "k8s-loadbalancer-restricted", SERVICE,
         service(loadBalancerSourceRanges=["203.0.113.0/24", "::/0"]), "violation"),
    Case("k8s-lb-443-allowed-cidrs", "k8s-loadbalancer-restricted", SERVICE,
         service(loadBalancerSourceRanges=["203.0.113.0/24", "198.51.100.0/24"]), "pass"),
    Case("k8s-lb-internal-gke", "k8s-loadbalancer-restricted", SERVICE,
         service(annotations={"networking.gke.io/load-balancer-type": "Internal"}), "pass"),
    Case("k8s-lb-internal-aws-scheme", "k8s-loadbalancer-restricted", SERVICE,
         service(annotations={"service.beta.kubernetes.io/aws-load-balancer-type": "external",
                              "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal"}), "pass"),
    Case("k8s-lb-aws-scheme-overrides-legacy-internal", "k8s-loadbalancer-restricted", SERVICE,
         service(annotations={"service.beta.kubernetes.io/aws-load-balancer-type": "external",
                              "service.beta.kubernetes.io/aws-load-balancer-internal": "true",
                              "service.beta.kubernetes.io/aws-load-balancer-scheme": "internet-facing"}),
         "violation"),
    Case("k8s-lb-aws-scheme-without-controller-is-ignored", "k8s-loadbalancer-restricted", SERVICE,
         service(annotations={"service.beta.kubernetes.io/aws-load-balancer-scheme": "internal"}), "violation"),
    Case("k8s-lb-aws-legacy-internal-without-controller", "k8s-loadbalancer-restricted", SERVICE,
         service(annotations={"service.beta.kubernetes.io/aws-load-balancer-internal": "true"}), "pass"),
    Case("k8s-lb-aws-scheme-with-load-balancer-class", "k8s-loadbalancer-restricted", SERVICE,
         service(annotations={"service.beta.kubernetes.io/aws-load-balancer-scheme": "internal"},
                 loadBalancerClass="service.k8s.aws/nlb"), "pass"),
    Case("k8s-lb-world-in-annotation", "k8s-loadbalancer-restricted", SERVICE,
         service(annotations={"service.beta.kubernetes.io/load-balancer-source-ranges": "0.0.0.0/1,128.0.0.0/1"}),
         "violation"),
    Case("k8s-lb-unknown-ranges", "k8s-loadbalancer-restricted", SERVICE,
         service(loadBalancerSourceRanges=UNKNOWN_ARRAY_VALUE), "unknown"),
    Case("k8s-cluster-ip-service", "k8s-loadbalancer-restricted", SERVICE, service("ClusterIP"), "pass"),
    Case("k8s-service-patch-world-ranges-on-load-balancer", "k8s-loadbalancer-restricted",
         "kubernetes:core/v1:ServicePatch", service(loadBalancerSourceRanges=["0.0.0.0/0"]), "violation"),
    Case("k8s-service-patch-world-ranges-type-left-out", "k8s-loadbalancer-restricted",
         "kubernetes:core/v1:ServicePatch",
         {"metadata": {"name": "web"}, "spec": {"loadBalancerSourceRanges": ["::/0"]}}, "unknown"),
    Case("k8s-service-patch-makes-public-load-balancer", "k8s-loadbalancer-restricted",
         "kubernetes:core/v1:ServicePatch", {"metadata": {"name": "web"}, "spec": {"type": "LoadBalancer"}},
         "unknown"),
    Case("k8s-service-patch-other-fields", "k8s-loadbalancer-restricted", "kubernetes:core/v1:ServicePatch",
         {"metadata": {"name": "web", "labels": {"team": "ml"}}}, "pass"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_case(case: Case) -> None:
    assert_case(case)


def test_case_ids_are_unique() -> None:
    assert len({c.id for c in CASES}) == len(CASES)


def test_other_resource_types_are_ignored() -> None:
    verdict = check_resource(ADMIN, "aws:s3/bucket:Bucket", sg("tcp", 22.0, 22.0, **WORLD4))
    assert verdict.kind == "pass"
