"""The stack config: a valid stack parses into the typed tree; each bad config gets its exact message."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from infra.config import ConfigError, parse_config

# The day the version windows are judged on in these tests (infra/versions.py).
TODAY = date(2026, 11, 29)
API = {"apiCidrs": ["198.51.100.0/24"]}
MODEL = {"name": "tiny", "source": "bucket", "revision": "r1"}
AZURE_ZONE = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/dns/providers/Microsoft.Network/"
              "dnszones/servestack.example.com")
ACME = {"hostname": "api.servestack.example.com", "tls": "acme", "acmeEmail": "ops@servestack.example.com"}
VALID_AWS: dict[str, Any] = {
    "servestack:cloud": "aws",
    "aws:region": "us-east-1",
    "servestack:environment": "prod",
    "servestack:gpu": {"type": "nvidia-l4", "minNodes": 1, "maxNodes": 8},
    "servestack:access": {"endpointCidrs": ["203.0.113.0/24"], **API},
    "servestack:model": MODEL,
    "servestack:gateway": {**ACME, "dnsZone": "Z0SERVESTACKEXAMPLE0"},
}
VALID_GCP: dict[str, Any] = {
    "servestack:cloud": "gcp", "gcp:project": "servestack-prod", "gcp:region": "us-central1",
    "servestack:environment": "prod", "servestack:gpu": {"type": "nvidia-l4", "minNodes": 1, "maxNodes": 8},
    "servestack:access": {"endpointCidrs": ["203.0.113.0/24"]},
    "servestack:model": MODEL,
    "servestack:gateway": {**ACME, "dnsZone": "servestack-example"},
}
VALID_LOCAL: dict[str, Any] = {
    "servestack:cloud": "local",
    "servestack:local": {"kubeContext": "kind-servestack"},
    "servestack:access": {"endpointCidrs": ["10.0.0.0/8"]},
    "servestack:serving": {"image": "servestack-serving:0.1.0"},
    "servestack:model": {"name": "tiny", "source": "image", "revision": "r1"},
}


def test_valid_aws_config_fills_the_tree_from_the_catalog() -> None:
    config = parse_config("aws-prod", VALID_AWS, TODAY)
    assert config.cloud == "aws" and config.region == "us-east-1" and config.is_prod
    # The cheapest L4 machine on AWS is chosen when none is named.
    assert config.gpu.machine_type == "g6.xlarge"
    assert config.gpu.count == 1
    assert (config.gpu.min_nodes, config.gpu.max_nodes, config.gpu.spot) == (1, 8, False)
    assert config.access.endpoint_cidrs == ("203.0.113.0/24",)
    # The deployer and operators reach the API's public endpoint from their CIDR blocks only.
    assert config.access.api_access == "public" and config.access.api_cidrs == ("198.51.100.0/24",)
    assert config.kubernetes_version == "1.35"
    assert config.serving.image is None  # taken from the stack's registry


def test_config_values_arrive_as_strings_from_the_engine() -> None:
    # The engine hands every value over as a string, objects JSON-encoded.
    values = {**VALID_AWS, "servestack:gpu": '{"type": "nvidia-l4", "minNodes": "0", "maxNodes": 2.0, '
                                               '"spot": "true"}', "servestack:budgetPerHour": "3.5"}
    config = parse_config("aws-dev", values, TODAY)
    assert (config.gpu.min_nodes, config.gpu.max_nodes, config.gpu.spot) == (0, 2, True)
    assert config.budget_per_hour == 3.5


def test_local_stack_may_run_without_gpu() -> None:
    config = parse_config("local", VALID_LOCAL)
    assert config.gpu.type is None and config.gpu.count == 0
    assert config.local.kube_context == "kind-servestack"


BAD_CONFIGS = [
    pytest.param(
        VALID_AWS, {"servestack:cloud": "gcpp"},
        ["servestack:cloud: 'gcpp' is not a known cloud; allowed: local, aws, gcp, azure"],
        id="unknown-cloud"),
    pytest.param(
        VALID_AWS, {"servestack:cloud": None},
        ["servestack:cloud: missing; allowed: local, aws, gcp, azure"],
        id="missing-cloud"),
    pytest.param(
        VALID_AWS, {"servestack:access": {"endpointCidrs": ["10.0.0.0/33", "bad"], **API}},
        ["servestack:access.endpointCidrs[0]: '10.0.0.0/33' is not a CIDR block; expected an address and "
         "prefix length such as 203.0.113.0/24 or 2001:db8::/32",
         "servestack:access.endpointCidrs[1]: 'bad' is not a CIDR block; expected an address and "
         "prefix length such as 203.0.113.0/24 or 2001:db8::/32"],
        id="malformed-cidr"),
    pytest.param(
        VALID_AWS, {"servestack:access": {"endpointCidrs": ["203.0.113.0/24", "0.0.0.0/0"], **API}},
        ["servestack:access.endpointCidrs[1]: '0.0.0.0/0' opens the endpoint to the whole internet, which "
         "is never allowed (an API key is no firewall); list the clients' CIDR blocks"],
        id="world-endpoint"),
    pytest.param(
        VALID_AWS, {"servestack:access": {"endpointCidrs": ["::0/0"], **API}},
        ["servestack:access.endpointCidrs[0]: '::/0' opens the endpoint to the whole internet, which "
         "is never allowed (an API key is no firewall); list the clients' CIDR blocks"],
        id="world-ipv6-endpoint"),
    pytest.param(
        {**VALID_AWS, "servestack:environment": "dev"}, {"servestack:access": {"endpointCidrs": ["0.0.0.0/0"], **API}},
        ["servestack:access.endpointCidrs[0]: '0.0.0.0/0' opens the endpoint to the whole internet, which "
         "is never allowed (an API key is no firewall); list the clients' CIDR blocks"],
        id="world-endpoint-in-dev-too"),
    pytest.param(
        VALID_AWS, {"servestack:access": {"endpointCidrs": ["203.0.113.0/24"], "apiCidrs": ["1.2.3.4/0"]}},
        ["servestack:access.apiCidrs[0]: '0.0.0.0/0' opens the Kubernetes API to the whole internet, which "
         "is never allowed; list the deployer's and the operators' CIDR blocks"],
        id="world-api-any-environment"),
    pytest.param(
        VALID_AWS, {"servestack:access": {"endpointCidrs": ["203.0.113.0/24"]}},
        ["servestack:access.apiCidrs: missing, so the Kubernetes API's public endpoint would admit nobody, and "
         "the machine running `pulumi up` (a laptop, a CI runner) sits outside the network this stack creates, "
         "where the private endpoint is: every Kubernetes object of the stack would time out. List the CIDR "
         "blocks of the deployer and the operators (the public endpoint admits only them; nodes use the private "
         "endpoint)"],
        id="api-unreachable-aws"),
    pytest.param(
        VALID_GCP, {"servestack:access": {"endpointCidrs": ["203.0.113.0/24"], "apiAccess": "public"}},
        ["servestack:access.apiCidrs: missing, so the Kubernetes API's public endpoint would admit nobody, and "
         "the machine running `pulumi up` (a laptop, a CI runner) sits outside the network this stack creates, "
         "where the private endpoint is: every Kubernetes object of the stack would time out. List the CIDR "
         "blocks of the deployer and the operators (the public endpoint admits only them; nodes use the private "
         "endpoint), or set servestack:access.apiAccess to dns (GKE's DNS endpoint, authorized by IAM)"],
        id="api-unreachable-gcp-public"),
    pytest.param(
        VALID_GCP, {"servestack:access": {"endpointCidrs": ["203.0.113.0/24"], **API}},
        ["servestack:access.apiCidrs: set, but servestack:access.apiAccess is dns: the IP endpoint is private "
         "and the DNS endpoint is authorized by IAM, so there is no public endpoint to restrict; remove "
         "apiCidrs, or set servestack:access.apiAccess to public"],
        id="api-cidrs-with-dns"),
    pytest.param(
        VALID_AWS, {"servestack:access": {"endpointCidrs": ["203.0.113.0/24"], "apiAccess": "dns", **API}},
        ["servestack:access.apiAccess: 'dns' is not a way to reach the API on aws; allowed: public"],
        id="dns-on-aws"),
    pytest.param(
        VALID_AWS, {"servestack:access": {}},
        ["servestack:access.endpointCidrs: missing; list the CIDR blocks allowed to reach the endpoint, or "
         "set servestack:access.internalLoadBalancer to true",
         "servestack:access.apiCidrs: missing, so the Kubernetes API's public endpoint would admit nobody, and "
         "the machine running `pulumi up` (a laptop, a CI runner) sits outside the network this stack creates, "
         "where the private endpoint is: every Kubernetes object of the stack would time out. List the CIDR "
         "blocks of the deployer and the operators (the public endpoint admits only them; nodes use the private "
         "endpoint)"],
        id="no-endpoint-cidrs"),
    pytest.param(
        VALID_AWS, {"servestack:access": {"endpointCidrs": [], **API}},
        ["servestack:access.endpointCidrs: missing; list the CIDR blocks allowed to reach the endpoint, or "
         "set servestack:access.internalLoadBalancer to true"],
        id="empty-endpoint-cidrs"),
    pytest.param(
        VALID_AWS, {"servestack:gpu": {"type": "nvidia-l4", "minNodes": 3, "maxNodes": 2},
                    "servestack:serving": {"maxReplicas": 1}},
        ["servestack:gpu.minNodes: 3 is greater than servestack:gpu.maxNodes (2); minNodes must be <= "
         "maxNodes"],
        id="min-over-max-nodes"),
    pytest.param(
        VALID_AWS, {"servestack:serving": {"minReplicas": 3, "maxReplicas": 2}},
        ["servestack:serving.minReplicas: 3 is greater than servestack:serving.maxReplicas (2); "
         "minReplicas must be <= maxReplicas"],
        id="min-over-max-replicas"),
    pytest.param(
        VALID_AWS, {"servestack:gpu": {"type": "nvidia-t4", "maxNodes": 2}},
        ["servestack:gpu.type: 'nvidia-t4' is not a GPU type known on aws; allowed: nvidia-a10g, "
         "nvidia-h100-80gb, nvidia-l4, nvidia-l40s, nvidia-tesla-a100"],
        id="gpu-unknown-for-cloud"),
    pytest.param(
        VALID_AWS, {"servestack:gpu": {"type": "nvidia-l4", "machineType": "g5.xlarge"}},
        ["servestack:gpu.machineType: 'g5.xlarge' carries nvidia-a10g, not the configured "
         "servestack:gpu.type nvidia-l4"],
        id="machine-type-for-other-gpu"),
    pytest.param(
        VALID_AWS, {"servestack:gpu": {"type": "nvidia-l4", "machineType": "g9.huge"}},
        ["servestack:gpu.machineType: 'g9.huge' is not a GPU machine type known on aws; allowed: g6.xlarge, "
         "g6.2xlarge, g6.12xlarge"],
        id="unknown-machine-type"),
    pytest.param(
        VALID_AWS, {"servestack:gpu": {"maxNodes": 2}},
        ["servestack:gpu.type: missing; the aws stacks need a GPU; allowed: nvidia-a10g, nvidia-h100-80gb, "
         "nvidia-l4, nvidia-l40s, nvidia-tesla-a100"],
        id="cloud-without-gpu"),
    pytest.param(
        VALID_AWS, {"aws:region": None},
        ["aws:region: missing; the aws stacks need a region (pulumi config set aws:region <region>)"],
        id="missing-aws-region"),
    pytest.param(
        VALID_AWS, {"servestack:cloud": "azure", "aws:region": None,
                    "servestack:azure": {"storageCidrs": API["apiCidrs"]},
                    "servestack:gateway": {**ACME, "dnsZone": AZURE_ZONE}},
        ["azure-native:location: missing; the azure stacks need a region "
         "(pulumi config set azure-native:location <region>)",
         "servestack:gpu.type: 'nvidia-l4' is not a GPU type known on azure; allowed: nvidia-a10, "
         "nvidia-a100-80gb, nvidia-h100-80gb, nvidia-t4"],
        id="missing-azure-location"),
    pytest.param(
        VALID_AWS, {"servestack:gpus": {"type": "nvidia-l4"}},
        ["servestack:gpus: unknown key; known: access, aws, azure, budgetPerHour, cloud, environment, gateway, "
         "gcp, gpu, kubernetesVersion, local, model, monitoring, serving, tlsCertificate, tlsPrivateKey"],
        id="unknown-key"),
    pytest.param(
        VALID_AWS, {"servestack:gpu": {"type": "nvidia-l4", "minNodes": "x", "maxNodes": 2, "spot": "yes"},
                    "servestack:serving": {"maxReplicas": 1}},
        ["servestack:gpu.minNodes: 'x' is not a whole number", "servestack:gpu.spot: 'yes' is not true or false"],
        id="wrong-types"),
    pytest.param(
        VALID_AWS, {"servestack:environment": "qa", "servestack:budgetPerHour": -1},
        ["servestack:environment: 'qa' is not a known environment; allowed: dev, staging, prod",
         "servestack:budgetPerHour: -1.0 must be greater than 0"],
        id="environment-and-budget"),
    pytest.param(
        VALID_AWS, {"servestack:kubernetesVersion": "1.20"},
        ["servestack:kubernetesVersion: '1.20' is not a Kubernetes version servestack has schemas for; allowed: "
         "1.30, 1.31, 1.32, 1.33, 1.34, 1.35, 1.36, 1.37"],
        id="old-kubernetes"),
    pytest.param(
        VALID_AWS, {"servestack:kubernetesVersion": "1.33"},
        ["servestack:kubernetesVersion: '1.33' left aws's support on 2026-07-29; supported on aws on 2026-11-29: "
         "1.34 (until 2026-12-02), 1.35 (until 2027-03-27), 1.36 (until 2027-08-02)"],
        id="version-out-of-eks-window"),
    pytest.param(
        VALID_GCP, {"servestack:kubernetesVersion": "1.33"},
        ["servestack:kubernetesVersion: '1.33' left gcp's support on 2026-08-03; supported on gcp on 2026-11-29: "
         "1.34 (until 2026-11-30), 1.35 (until 2027-04-11), 1.36 (until 2027-08-09)"],
        id="version-out-of-gke-window"),
    pytest.param(
        {**VALID_AWS, "servestack:cloud": "azure", "azure-native:location": "eastus",
         "servestack:gpu": {"type": "nvidia-t4", "maxNodes": 2}, "servestack:gateway": {**ACME, "dnsZone": AZURE_ZONE},
         "servestack:azure": {"storageCidrs": API["apiCidrs"]}},
        {"servestack:kubernetesVersion": "1.37"},
        ["servestack:kubernetesVersion: '1.37' is not supported on azure; supported on azure on 2026-11-29: "
         "1.34 (until 2026-11-30), 1.35 (until 2027-03-31), 1.36 (until 2027-06-30)"],
        id="version-not-offered-on-aks"),
    pytest.param(
        VALID_AWS, {"aws:assumeRoles": [{"roleArn": "arn:aws:iam::123456789012:role/a"},
                                        {"roleArn": "arn:aws:iam::123456789012:role/b"}],
                    "aws:accessKey": "AKIAEXAMPLE"},
        ["aws:accessKey: set in the stack config, where `aws eks get-token` (the cluster's kubeconfig) cannot "
         "read it, so Kubernetes would see another identity than the one that made the cluster; use aws:profile, "
         "or the AWS_* environment variables, which both read",
         "aws:assumeRoles: 2 roles in a chain, but `aws eks get-token` (the cluster's kubeconfig) assumes one; "
         "put the chain in an AWS profile (source_profile) and set aws:profile"],
        id="aws-identity-the-kubeconfig-cannot-repeat"),
    pytest.param(
        VALID_GCP, {"gcp:impersonateServiceAccount": "deployer@servestack-prod.iam.gserviceaccount.com"},
        ["gcp:impersonateServiceAccount: set in the stack config, where the cluster's kubeconfig "
         "(gke-gcloud-auth-plugin with Application Default Credentials) cannot read it, so Kubernetes would see "
         "another identity than the one that made the cluster; point Application Default Credentials at that "
         "identity instead (GOOGLE_APPLICATION_CREDENTIALS, or `gcloud auth application-default login "
         "[--impersonate-service-account SA]`), which both read"],
        id="gcp-identity-the-kubeconfig-cannot-repeat"),
    pytest.param(
        VALID_AWS, {"servestack:serving": {"image": "servestack-serving:latest", "cpu": "two"}},
        ["servestack:serving.cpu: 'two' is not a Kubernetes quantity such as 2, 500m or 8Gi",
         "servestack:serving.image: 'servestack-serving:latest' has no fixed version; pin it by tag (not "
         "latest) or by digest"],
        id="serving-image-and-quantity"),
    pytest.param(
        VALID_AWS, {"servestack:serving": {"minReplicas": 4, "maxReplicas": 8}},
        ["servestack:serving.maxReplicas: 8 pods, plus the extra pod of a rolling update, need 9 GPUs but the GPU "
         "pool holds at most 8 (8 nodes x 1); raise servestack:gpu.maxNodes or lower maxReplicas"],
        id="more-pods-than-gpus"),
    pytest.param(
        VALID_AWS, {"servestack:model": {"name": "GLM 4", "source": "http://example.com/model", "revision": "r1"}},
        ["servestack:model.name: 'GLM 4' is not a model name; use lower-case letters, digits, '.', '_' and "
         "'-' (at most 63 characters)",
         "servestack:model.source: 'http://example.com/model' is not a model source; allowed: image, bucket, "
         "or a URI starting with s3://, gs://, az://, abfs://"],
        id="model"),
    pytest.param(
        VALID_AWS, {"servestack:aws": {"vpcCidr": "8.8.0.0/16", "availabilityZones": 4}},
        ["servestack:aws.availabilityZones: 4 is greater than 3; it must be at most 3",
         "servestack:aws.vpcCidr: '8.8.0.0/16' must be a private IPv4 range between /8 and /20, such as "
         "10.0.0.0/16"],
        id="aws-network"),
    pytest.param(
        VALID_LOCAL, {"servestack:local": {}, "servestack:serving": {}},
        ["servestack:serving.image: missing; the local stack has no registry of its own, so name the image "
         "(for example servestack-serving:0.1.0)",
         "servestack:local.kubeContext: missing; the local stack deploys to an existing cluster: name its "
         "kubeconfig context"],
        id="local-without-image-or-context"),
    pytest.param(
        VALID_LOCAL, {"servestack:model": {"source": "bucket", "revision": "r1"},
                      "servestack:gpu": {"machineType": "g6.xlarge"}},
        ["servestack:gpu.machineType: 'g6.xlarge' is set but the local stack uses the nodes of an existing "
         "cluster; remove it",
         "servestack:model.source: 'bucket' needs the stack's model bucket, and the local stack has none; use "
         "image or a URI"],
        id="local-bucket-and-machine"),
    pytest.param(
        VALID_AWS, {"servestack:gateway": {**ACME, "dnsZone": "Z0SERVESTACKEXAMPLE0", "tls": "none"}},
        ["servestack:gateway.tls: 'none' (plain HTTP), but a prod stack serves HTTPS only: the API keys, the "
         "prompts and the answers would cross the network in clear text; use acme or secret"],
        id="prod-plain-http"),
    pytest.param(
        VALID_AWS, {"servestack:gateway": {"enabled": False}},
        ["servestack:gateway.enabled: false, but a prod stack serves HTTPS only, which the gateway terminates; "
         "remove the key or set it to true"],
        id="prod-without-gateway"),
    pytest.param(
        VALID_AWS, {"servestack:serving": {"auth": False}},
        ["servestack:serving.auth: false, but a prod stack always requires API keys; remove the key, and list the "
         "clients in serving.apiKeys"],
        id="prod-without-auth"),
    pytest.param(
        VALID_AWS, {"servestack:serving": {"apiKey": True}},
        ["servestack:serving.apiKey: replaced by servestack:serving.auth (true or false) and "
         "servestack:serving.apiKeys (one key per client, each with its limits); remove it"],
        id="the-single-key-of-old"),
    pytest.param(
        VALID_AWS, {"servestack:serving": {"apiKeys": [
            {"client": "Team A", "requestsPerMinute": -1}, {"client": "web"}, {"client": "web", "tokens": 5}]}},
        ["servestack:serving.apiKeys[0].requestsPerMinute: -1 is less than 0; it must be at least 0",
         "servestack:serving.apiKeys[0].client: 'Team A' is not a client id; use lower-case letters, digits and "
         "'-' (at most 63 characters)",
         "servestack:serving.apiKeys[2].tokens: unknown key; known: client, requestsPerMinute, rotation, "
         "tokensPerMinute",
         "servestack:serving.apiKeys[2].client: 'web' is listed twice; each client has one key"],
        id="api-keys"),
    pytest.param(
        VALID_AWS, {"servestack:model": {**MODEL, "revision": "R1/../x"},
                    "servestack:serving": {"canary": {"revision": "r1", "weight": 150}}},
        ["servestack:model.revision: 'R1/../x' is not a revision; use lower-case letters, digits, '.', '_' and '-', "
         "starting and ending with a letter or digit (at most 63 characters)",
         "servestack:serving.canary.weight: 150 is greater than 100; it must be at most 100"],
        id="revisions"),
    pytest.param(
        VALID_AWS, {"servestack:model": {**MODEL, "source": "image"},
                    "servestack:serving": {"canary": {"revision": "r1", "weight": 10}}},
        ["servestack:serving.canary.revision: 'r1' is the stable revision (model.revision); a canary serves "
         "another one",
         "servestack:serving.canary: set, but model.source is image: an image carries one revision; serve the "
         "model from the bucket or a URI to run a canary"],
        id="canary-of-the-same-revision-from-an-image"),
    pytest.param(
        VALID_AWS, {"servestack:serving": {"maxReplicas": 6, "canary": {"revision": "r2", "weight": 25}}},
        ["servestack:serving.maxReplicas: 6 pods, 2 canary pod(s), plus the extra pod of a rolling update, need 9 "
         "GPUs but the GPU pool holds at most 8 (8 nodes x 1); raise servestack:gpu.maxNodes or lower maxReplicas"],
        id="canary-pods-need-gpus-too"),
    pytest.param(
        VALID_AWS, {"servestack:gateway": {"hostname": "API.example.com", "tls": "acme", "acmeEmail": "ops",
                                           "acmeServer": "http://acme.example.com", "dnsZone": "servestack-example"}},
        ["servestack:gateway.hostname: 'API.example.com' is not a DNS name such as api.example.com (lower case, "
         "no wildcard)",
         "servestack:gateway.dnsZone: 'servestack-example' is not a Route 53 hosted zone id such as "
         "Z0123456789ABCDEFGHIJ",
         "servestack:gateway.acmeEmail: 'ops' is not an e-mail address; the ACME server sends expiry notices there",
         "servestack:gateway.acmeServer: 'http://acme.example.com' is not an ACME server; allowed: letsencrypt, "
         "letsencrypt-staging or an https:// directory URL"],
        id="gateway-values"),
    pytest.param(
        VALID_AWS, {"servestack:gateway": {"hostname": "api.servestack.example.com", "tls": "acme",
                                           "acmeEmail": "ops@servestack.example.com"}},
        ["servestack:gateway.dnsZone: missing; ACME proves the hostname through a DNS record (DNS-01: the endpoint "
         "admits only access.endpointCidrs, so an HTTP challenge could not reach it); name a Route 53 hosted zone "
         "id such as Z0123456789ABCDEFGHIJ, or set servestack:gateway.tls to secret"],
        id="acme-without-a-zone"),
    pytest.param(
        VALID_AWS, {"servestack:gateway": {"hostname": "api.servestack.example.com", "tls": "secret"}},
        ["servestack:tlsCertificate: missing, but servestack:gateway.tls is secret; set it from a PEM file: pulumi "
         "config set --secret servestack:tlsCertificate < FILE.pem",
         "servestack:tlsPrivateKey: missing, but servestack:gateway.tls is secret; set it from a PEM file: pulumi "
         "config set --secret servestack:tlsPrivateKey < FILE.pem"],
        id="secret-tls-without-the-certificate"),
    pytest.param(
        VALID_LOCAL, {"servestack:gateway": {"enabled": True, "hostname": "llm.example.test", "tls": "acme",
                                             "acmeEmail": "ops@example.test", "dnsZone": "zone"}},
        ["servestack:gateway.dnsZone: set, but the local stack manages no DNS zone; remove it",
         "servestack:gateway.tls: 'acme', but the local stack has no DNS zone for the ACME challenge; use secret "
         "(a certificate in the stack config) or none"],
        id="acme-on-local"),
    pytest.param(
        {**VALID_AWS, "servestack:environment": "dev"},
        {"servestack:gpu": {"type": "nvidia-t4", "maxNodes": 2, "spot": True}, "servestack:cloud": "azure",
         "aws:region": None, "azure-native:location": "eastus", "servestack:azure": {"storageCidrs": API["apiCidrs"]},
         "servestack:gateway": {"enabled": False}, "servestack:serving": {"drainSeconds": 20}},
        ["servestack:gpu.spot: true, but azure's preemption notice (30 s) leaves no time to drain after the 20 s "
         "pause for the load balancer and the 10 s shutdown; enable the gateway (servestack:gateway), or use "
         "on-demand nodes"],
        id="azure-spot-without-the-gateway"),
    pytest.param(
        {**VALID_AWS, "servestack:environment": "dev"},
        {"servestack:gpu": {"type": "nvidia-t4", "maxNodes": 2, "spot": True}, "servestack:cloud": "azure",
         "aws:region": None, "azure-native:location": "eastus", "servestack:azure": {"storageCidrs": API["apiCidrs"]},
         "servestack:gateway": {**ACME, "dnsZone": AZURE_ZONE}, "servestack:serving": {"drainSeconds": 20}},
        ["servestack:serving.drainSeconds: 20 does not fit azure's spot preemption notice (30 s, of which 5 s pause "
         "and 10 s shutdown); at most 15 on spot nodes"],
        id="azure-spot-drain-too-long"),
    pytest.param(
        VALID_AWS, {"servestack:gpu": {"type": "nvidia-l4", "machineType": "g6.12xlarge", "maxNodes": 8}},
        ["servestack:gpu.machineType: g6.12xlarge has 4 nvidia-l4 GPUs, and each serving pod would take them all: "
         "the server uses one GPU per pod, so the others would sit idle; choose a GPU type and machine type with "
         "one GPU"],
        id="multi-gpu-machine"),
    pytest.param(
        VALID_AWS, {"servestack:gpu": {"type": "nvidia-l4", "count": 4, "maxNodes": 8}},
        ["servestack:gpu.count: g6.12xlarge has 4 nvidia-l4 GPUs, and each serving pod would take them all: "
         "the server uses one GPU per pod, so the others would sit idle; choose a GPU type and machine type with "
         "one GPU"],
        id="multi-gpu-count"),
    pytest.param(
        VALID_AWS, {"servestack:gpu": {"type": "nvidia-h100-80gb", "maxNodes": 8}},
        ["servestack:gpu.type: nvidia-h100-80gb comes only in machines of several GPUs on aws (the cheapest: "
         "p5.48xlarge, 8 GPUs): the server uses one GPU per pod, so the others would sit idle; choose a GPU type "
         "and machine type with one GPU"],
        id="multi-gpu-type"),
    pytest.param(
        VALID_LOCAL, {"servestack:gpu": {"type": "nvidia-l4", "count": 2}},
        ["servestack:gpu.count: 2 GPUs per pod: the server uses one GPU per pod, so the others would sit idle; "
         "choose a GPU type and machine type with one GPU"],
        id="multi-gpu-local"),
]


@pytest.mark.parametrize(("base", "change", "expected"), BAD_CONFIGS)
def test_bad_config_is_rejected_with_one_message_per_problem(
        base: dict[str, Any], change: dict[str, Any], expected: list[str]) -> None:
    values = {k: v for k, v in {**base, **change}.items() if v is not None}
    with pytest.raises(ConfigError) as raised:
        parse_config("test", values, TODAY)
    assert raised.value.problems == expected
    # The error's text carries every problem, for the CLI and for `pulumi up`.
    for problem in expected:
        assert problem in str(raised.value)


def test_gcp_needs_a_project_and_a_region() -> None:
    values = {k: v for k, v in VALID_GCP.items() if k not in ("gcp:project", "gcp:region")}
    with pytest.raises(ConfigError) as raised:
        parse_config("gcp-prod", values, TODAY)
    assert raised.value.problems == [
        "gcp:region: missing; the gcp stacks need a region (pulumi config set gcp:region <region>)",
        "gcp:project: missing; the gcp stacks need a project (pulumi config set gcp:project <project-id>)",
    ]


def test_a_prod_stack_has_https_and_keys_by_default() -> None:
    config = parse_config("aws-prod", VALID_AWS, TODAY)
    assert config.gateway.enabled and config.gateway.https and config.gateway.tls == "acme"
    assert config.gateway.acme_server == "https://acme-v02.api.letsencrypt.org/directory"
    assert config.entry_ports == (80, 443)
    assert config.serving.auth
    assert [(k.client, k.requests_per_minute, k.tokens_per_minute) for k in config.serving.api_keys] == [
        ("default", 600, 1_000_000)]


def test_the_local_stack_has_no_gateway_unless_asked() -> None:
    config = parse_config("local", VALID_LOCAL, TODAY)
    assert not config.gateway.enabled and config.entry_ports == (80,)


@pytest.mark.parametrize(("weight", "pods", "stable", "canary_max"), [(0, False, "r1", 0), (10, True, "r1", 1),
                                                                     (40, True, "r1", 2), (100, False, "r2", 0)])
def test_canary_weights(weight: int, pods: bool, stable: str, canary_max: int) -> None:
    values = {**VALID_AWS, "servestack:serving": {"maxReplicas": 5, "canary": {"revision": "r2", "weight": weight}}}
    config = parse_config("aws-prod", values, TODAY)
    assert config.serving.canary_pods is pods
    assert config.stable_revision == stable
    assert config.serving.canary_max_replicas == canary_max


@pytest.mark.parametrize(("cloud", "gateway", "drain"), [("aws", True, 30), ("gcp", True, 30), ("azure", True, 15)])
def test_spot_stacks_drain_within_the_preemption_notice_by_default(cloud: str, gateway: bool, drain: int) -> None:
    base = {"aws": VALID_AWS, "gcp": VALID_GCP, "azure": {
        **VALID_AWS, "servestack:cloud": "azure", "aws:region": None, "azure-native:location": "eastus",
        "servestack:azure": {"storageCidrs": API["apiCidrs"]}, "servestack:gateway": {**ACME, "dnsZone": AZURE_ZONE}}}
    gpu = {"type": "nvidia-t4" if cloud == "azure" else "nvidia-l4", "maxNodes": 2, "spot": True}
    values = {k: v for k, v in {**base[cloud], "servestack:environment": "dev", "servestack:gpu": gpu}.items()
              if v is not None}
    assert parse_config(f"{cloud}-dev", values, TODAY).serving.drain_seconds == drain



# --- the model must fit its GPU ------------------------------------------------------------------------

# meta-llama/Llama-3.1-8B's config.json (the fields that size it): 8,030,261,248 parameters.
LLAMA_31_8B = {"model_type": "llama", "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
               "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
               "max_position_embeddings": 131072, "tie_word_embeddings": False, "attention_bias": False,
               "mlp_bias": False, "torch_dtype": "bfloat16"}


def test_a_batch_too_big_for_the_gpu_is_refused_naming_both_sizes_and_the_fields() -> None:
    # smollm2 (134,515,008 parameters, 30 layers, 3 KV heads of 64, 8192 tokens) on a T4 (16 GB = 14.90 GiB):
    #   weights 134,515,008 x 2 B (bf16)                    =    269,030,016 B = 0.25 GiB
    #   cache per sequence 2 x 30 x 3 x 64 x 2 B x 8192     =    188,743,680 B
    #   128 sequences                                       = 24,159,191,040 B = 22.50 GiB
    #   (weights + cache) x 1.1                             = 26,871,043,162 B = 25.03 GiB
    #   sequences that fit: (16e9 / 1.1 - 269,030,016) / 188,743,680 = 75.6 -> 75
    values = {**VALID_AWS, "servestack:cloud": "azure", "azure-native:location": "eastus",
              "servestack:environment": "dev", "servestack:gpu": {"type": "nvidia-t4", "minNodes": 1, "maxNodes": 8},
              "servestack:model": {**MODEL, "name": "smollm2", "source": "image"},
              "servestack:serving": {"maxBatchSize": 128}, "servestack:gateway": {"tls": "none"}}
    del values["aws:region"]
    with pytest.raises(ConfigError) as raised:
        parse_config("azure-dev", values, TODAY)
    assert ("servestack:model.name: smollm2 needs 25.03 GiB on one GPU (weights 0.25 GiB in bfloat16, key-value "
            "cache 22.50 GiB for servestack:serving.maxBatchSize 128 sequences of 8192 tokens, plus 10% headroom), "
            "but servestack:gpu.type nvidia-t4 has 14.90 GiB; lower maxBatchSize to at most 75 or choose a larger "
            "GPU") in raised.value.problems
    values["servestack:serving"] = {"maxBatchSize": 75}
    assert parse_config("azure-dev", values, TODAY).serving.max_batch_size == 75  # fits


def test_a_model_too_big_for_the_gpu_at_any_batch_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    import json

    from infra import modelsize

    (tmp_path / "llama-3.1-8b.json").write_text(json.dumps(LLAMA_31_8B))
    monkeypatch.setattr(modelsize, "MODELS_DIR", tmp_path)
    assert modelsize.known("llama-3.1-8b").parameters == 8_030_261_248  # type: ignore[union-attr]
    # One sequence of 131,072 tokens: 2 x 32 x 8 x 128 x 2 B x 131,072 = 16 GiB of cache, 14.96 GiB of weights.
    values = {**VALID_AWS, "servestack:model": {**MODEL, "name": "llama-3.1-8b"},
              "servestack:serving": {"maxBatchSize": 1}}
    with pytest.raises(ConfigError) as raised:
        parse_config("aws-prod", values, TODAY)
    assert raised.value.problems == [
        "servestack:model.name: llama-3.1-8b needs 34.05 GiB on one GPU (weights 14.96 GiB in bfloat16, key-value "
        "cache 16.00 GiB for servestack:serving.maxBatchSize 1 sequences of 131072 tokens, plus 10% headroom), but "
        "servestack:gpu.type nvidia-l4 has 22.35 GiB; choose a larger GPU"]
    # On an 80 GB A100 (74.51 GiB) it fits.
    gcp = {**VALID_GCP, "servestack:model": values["servestack:model"], "servestack:serving": {"maxBatchSize": 1},
           "servestack:gpu": {"type": "nvidia-a100-80gb", "minNodes": 1, "maxNodes": 8}}
    assert parse_config("gcp-prod", gcp, TODAY).gpu.machine_type == "a2-ultragpu-1g"
