"""The GCP platform: a private GKE cluster with a GPU node pool that scales from zero.

One component, `servestack:gcp:GpuCluster`, declares everything the serving deployment needs:

- the project APIs it uses (left enabled on destroy: other workloads may share them);
- a custom-mode VPC with one subnetwork for the stack's region (secondary ranges for pods and services,
  private Google access), a Cloud Router with Cloud NAT for egress, flow logs in prod;
- explicit ingress firewall rules on the nodes' network tag, and a logged low-priority deny-all;
- a dedicated least-privilege node service account;
- a private, VPC-native GKE Standard cluster (zonal or regional) with Workload Identity, Dataplane V2,
  shielded nodes, a release channel, and Secrets encrypted with a Cloud KMS key in prod;
- a small CPU system pool and the GPU pool: GKE installs the driver and the device plugin, the pool is
  tainted, labelled, and autoscales from zero (spot when the stack says so);
- an Artifact Registry Docker repository and a GCS model bucket;
- a Google service account for the serving pods, bound through Workload Identity to exactly the serving
  Kubernetes service account, allowed to read the model bucket and nothing else;
- a kubeconfig (a secret) that authenticates through `gke-gcloud-auth-plugin`, and a Kubernetes provider;
- with the gateway and a Cloud DNS zone (servestack:gateway.dnsZone): a Google service account for cert-manager,
  bound to its Kubernetes service account, that may change record sets of that one zone (ACME DNS-01), and the
  hostname's A record there.

Load balancers are GKE's backend-service-based external passthrough NLBs (`cloud.google.com/l4-rbs`): GKE
recommends them over target pools, and their health checks on the health-check node port (3 s x 2) are what
infra/drain.py counts on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import ip_network
from typing import Any

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s
import pulumi_random as random

from infra import commands, drain
from infra.clouds import dns
from infra.clouds.gcp.kubeconfig import dns_endpoint, kubeconfig
from infra.clouds.gcp.zones import gpu_zones
from infra.config import DEFAULT_IMAGE_REPOSITORY, NAMESPACE, ConfigError, StackConfig
from infra.gateway import CERT_MANAGER_NAMESPACE, CERT_MANAGER_SERVICE_ACCOUNT
from infra.platform import (
    GPU_POOL_LABEL,
    GPU_POOL_VALUE,
    GPU_TAINT_EFFECT,
    GPU_TAINT_KEY,
    GPU_TAINT_VALUE,
    GPU_TOLERATION,
    AcmeDns,
    ManagedExporter,
    Platform,
    Upload,
    model_push_step,
)
from infra.serving import SERVICE_ACCOUNT as SERVING_SERVICE_ACCOUNT

# iamcredentials: Workload Identity mints tokens through it; cloudresourcemanager: project IAM grants;
# containerfilesystem: image streaming.
APIS = ("compute.googleapis.com", "container.googleapis.com", "artifactregistry.googleapis.com",
        "iam.googleapis.com", "iamcredentials.googleapis.com", "cloudresourcemanager.googleapis.com",
        "storage.googleapis.com", "containerfilesystem.googleapis.com", "logging.googleapis.com",
        "monitoring.googleapis.com")
PROD_APIS = ("cloudkms.googleapis.com",)

PODS_RANGE = "pods"
SERVICES_RANGE = "services"
SYSTEM_MACHINE_TYPE = "e2-standard-2"
SYSTEM_POOL_LABELS = {GPU_POOL_LABEL: "system"}
# Where Google's health checks come from: for an external passthrough load balancer (the serving Service's)
# and for an internal one (`internalLoadBalancer: true`); the ranges `gcp.compute.get_lbip_ranges` gives.
HEALTH_CHECK_RANGES = ("35.191.0.0/16", "209.85.152.0/22", "209.85.204.0/22")
INTERNAL_HEALTH_CHECK_RANGES = ("35.191.0.0/16", "130.211.0.0/22")
# With externalTrafficPolicy Local they probe the Service's healthCheckNodePort, one of the node ports.
NODE_PORTS = "30000-32767"
# The control plane reaches the nodes for the kubelet (10250), for admission webhooks (443, 8443, 9443) and
# for KEDA's metrics API server (6443: GKE calls the pod's port, not the Service's 443).
CONTROL_PLANE_PORTS = ("443", "6443", "8443", "9443", "10250")
# GKE's own rules (the load balancers' included) have priority 1000; ours sit beside them, and the
# logged deny-all sits below everything, just above the implied deny.
ALLOW_PRIORITY = 1000
DENY_ALL_PRIORITY = 65534
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# Secrets-encryption key rotation: 90 days.
KEY_ROTATION = "7776000s"
# Prod upgrades happen on weekend mornings (UTC): 8 hours on Saturdays and Sundays, above GKE's minimum
# of 48 hours in any 32 days. The dates only anchor the time of day.
PROD_MAINTENANCE_WINDOW = ("2025-01-04T02:00:00Z", "2025-01-04T10:00:00Z", "FREQ=WEEKLY;BYDAY=SA,SU")
# GKE extends a spot node's graceful shutdown (drain.GKE_SPOT_SHUTDOWN_SECONDS) from 1.35.0-gke.1171000 on.
SPOT_SHUTDOWN_MINOR = (1, 35)
# What cert-manager's Cloud DNS solver does in the zone it is given (hostedZoneName, so no zone lookup): list the
# challenge's TXT record set, then add or replace it, and delete it after, in a change it follows until done.
# Granted on that one zone: Cloud DNS has no narrower grant (by record name or type).
ACME_DNS_PERMISSIONS = ("dns.changes.create", "dns.changes.get", "dns.resourceRecordSets.create",
                        "dns.resourceRecordSets.delete", "dns.resourceRecordSets.list",
                        "dns.resourceRecordSets.update")


@dataclass(frozen=True)
class GpuClusterArgs:
    config: StackConfig
    project: str
    region: str
    zones: tuple[str, ...]  # where the GPU pool runs (validated against GPU_ZONES)


def build(config: StackConfig) -> Platform:
    if config.gcp.project is None or config.region is None:  # guaranteed by the config's validation
        raise ConfigError(config.stack, ["gcp:project and gcp:region are required"])
    _check(config)
    cluster = GpuCluster("servestack", GpuClusterArgs(config, config.gcp.project, config.region,
                                                      gpu_zones(config)))
    return cluster.platform


class GpuCluster(pulumi.ComponentResource):
    """The GCP resources of one stack; `platform` is what the serving deployment runs on."""

    cluster_name: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    registry_url: pulumi.Output[str]
    model_bucket_uri: pulumi.Output[str]
    serving_service_account: pulumi.Output[str]
    platform: Platform

    def __init__(self, name: str, args: GpuClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("servestack:gcp:GpuCluster", name, None, opts)
        config = args.config
        self._name, self._args = name, args
        self._labels = {"app": "servestack", "stack": _label(config.stack), "environment": config.environment}
        self._node_tag = _slug(f"servestack-{config.stack}-node", 63)

        self._apis = self._enable_apis()
        after_apis = pulumi.ResourceOptions(parent=self, depends_on=self._apis)
        network, subnet, egress = self._network(after_apis)
        # The cluster, and through it everything on it, depends on the network plumbing: `pulumi destroy`
        # deletes the serving load balancer (GKE's controller removes its forwarding rule and firewall
        # rules) while NAT and the firewall rules still stand, and nodes never start without them.
        plumbing = [*egress, *self._firewall_rules(network, after_apis)]
        node_sa = self._node_service_account(after_apis)
        registry = self._registry(node_sa, after_apis)
        bucket = self._model_bucket(after_apis)
        key = self._secrets_key(after_apis) if config.is_prod else None
        cluster = self._cluster(network, subnet, node_sa, key, plumbing)
        system_pool = self._system_pool(cluster, node_sa)
        gpu_pool = self._gpu_pool(cluster, node_sa, system_pool)
        serving_sa, serving_grants = self._serving_identity(cluster, bucket)
        acme = self._acme_dns(cluster) if config.gateway.enabled and config.gateway.dns_zone else None

        if config.access.api_access == "dns":
            # GKE's DNS endpoint: a name under gke.goog with a publicly trusted certificate, IAM-authorized.
            server = cluster.control_plane_endpoints_config.apply(dns_endpoint)
            ca_data: pulumi.Input[str] = ""
        else:
            server, ca_data = cluster.endpoint, cluster.master_auth.cluster_ca_certificate
        self.kubeconfig = pulumi.Output.secret(pulumi.Output.all(
            args.project, cluster.location, cluster.name, server, ca_data).apply(kubeconfig))
        provider = k8s.Provider(f"{name}-k8s", kubeconfig=self.kubeconfig,
                                opts=pulumi.ResourceOptions(parent=self))

        self.cluster_name = cluster.name
        self.registry_url = repository_url(args.region, args.project, registry.repository_id)
        self.model_bucket_uri = pulumi.Output.concat("gs://", bucket.name)
        self.serving_service_account = serving_sa.email
        project = f"--project {commands.quote(args.project)}"

        def image_upload(tag: str, build: str) -> Upload:
            image = pulumi.Output.concat(self.registry_url, f"/{DEFAULT_IMAGE_REPOSITORY}:{tag}")
            return Upload(
                what=f"the serving image {DEFAULT_IMAGE_REPOSITORY}:{tag}",
                check=pulumi.Output.concat(f"gcloud {project} artifacts docker images describe ", image, " --quiet"),
                steps=[f"gcloud auth configure-docker {args.region}-docker.pkg.dev --quiet",
                       pulumi.Output.concat(f"docker build {build}-t ", image, " serving"),
                       pulumi.Output.concat("docker push ", image)])

        def model_upload(model: str, revision: str) -> Upload:
            # The manifest is uploaded last: once it is there, the revision is whole.
            prefix = pulumi.Output.concat(self.model_bucket_uri, f"/models/{model}/{revision}/")
            return Upload(what=f"the model {model} at revision {revision} in the stack's bucket",
                          check=pulumi.Output.concat(f"gcloud {project} storage ls ", prefix, "manifest.json"),
                          steps=[model_push_step(revision)])

        self.platform = Platform(
            cloud="gcp",
            k8s_provider=provider,
            gpu_node_selector={GPU_POOL_LABEL: GPU_POOL_VALUE},
            # GKE taints no spot node; the GPU taint is the only one.
            gpu_tolerations=(GPU_TOLERATION,),
            # GKE runs its own NVIDIA device plugin on GPU nodes (with the driver it installs).
            needs_device_plugin=False,
            registry_url=self.registry_url,
            model_bucket_uri=self.model_bucket_uri,
            service_account_annotations={"iam.gke.io/gcp-service-account": serving_sa.email},
            # GKE ignores it on an internal load balancer; an existing target-pool Service keeps its target pool
            # (GKE removes the annotation again) until the Service is made anew.
            load_balancer_annotations={"cloud.google.com/l4-rbs": "enabled"},
            internal_load_balancer_annotations={"networking.gke.io/load-balancer-type": "Internal"},
            internal_cidrs=(config.gcp.network_cidr,),
            ready=(system_pool, gpu_pool, *serving_grants),
            access_groups={"viewer": config.access.viewer_groups, "operator": config.access.operator_groups},
            cluster=cluster,
            cluster_name=cluster.name,
            kubeconfig=self.kubeconfig,
            image_upload=image_upload,
            model_upload=model_upload,
            # The system pool carries no taint: the selector alone keeps the add-ons off the GPU nodes.
            system_node_selector=SYSTEM_POOL_LABELS,
            acme_dns=acme,
            # GKE's DCGM package (monitoring_config DCGM): a DaemonSet on the GPU nodes that Cloud Monitoring
            # collects through its own ClusterPodMonitoring; the stack's Prometheus scrapes the same pods.
            managed_dcgm=ManagedExporter(namespace="gke-managed-system",
                                         pod_labels={"app.kubernetes.io/name": "gke-managed-dcgm-exporter"},
                                         port="metrics"),
        )
        self.register_outputs({
            "cluster_name": self.cluster_name,
            "kubeconfig": self.kubeconfig,
            "registry_url": self.registry_url,
            "model_bucket_uri": self.model_bucket_uri,
            "serving_service_account": self.serving_service_account,
        })

    # --- project ---------------------------------------------------------------------------------

    def _enable_apis(self) -> list[pulumi.Resource]:
        config = self._args.config
        apis = APIS + (PROD_APIS if config.is_prod else ())
        return [gcp.projects.Service(
            f"{self._name}-api-{api.split('.')[0]}",
            project=self._args.project,
            service=api,
            disable_on_destroy=False,
            opts=pulumi.ResourceOptions(parent=self),
        ) for api in apis]

    # --- network ---------------------------------------------------------------------------------

    def _network(self, opts: pulumi.ResourceOptions
                 ) -> tuple[gcp.compute.Network, gcp.compute.Subnetwork, list[pulumi.Resource]]:
        name, args, config = self._name, self._args, self._args.config
        network = gcp.compute.Network(
            f"{name}-network",
            project=args.project,
            description=f"servestack {config.stack}: the GKE cluster's network",
            auto_create_subnetworks=False,
            routing_mode="REGIONAL",
            opts=opts,
        )
        subnet = gcp.compute.Subnetwork(
            f"{name}-subnet-{args.region}",
            project=args.project,
            region=args.region,
            network=network.id,
            description=f"servestack {config.stack}: nodes, with secondary ranges for pods and services",
            ip_cidr_range=config.gcp.network_cidr,
            secondary_ip_ranges=[
                gcp.compute.SubnetworkSecondaryIpRangeArgs(range_name=PODS_RANGE,
                                                           ip_cidr_range=config.gcp.pods_cidr),
                gcp.compute.SubnetworkSecondaryIpRangeArgs(range_name=SERVICES_RANGE,
                                                           ip_cidr_range=config.gcp.services_cidr),
            ],
            # Private nodes reach Google APIs (Artifact Registry, GCS) without NAT.
            private_ip_google_access=True,
            log_config=gcp.compute.SubnetworkLogConfigArgs(
                aggregation_interval="INTERVAL_5_SEC", flow_sampling=0.5, metadata="INCLUDE_ALL_METADATA",
            ) if config.is_prod else None,
            opts=opts,
        )
        router = gcp.compute.Router(
            f"{name}-router",
            project=args.project,
            region=args.region,
            network=network.id,
            description=f"servestack {config.stack}: Cloud NAT for the private nodes' egress",
            opts=opts,
        )
        nat = gcp.compute.RouterNat(
            f"{name}-nat",
            project=args.project,
            region=args.region,
            router=router.name,
            nat_ip_allocate_option="AUTO_ONLY",
            source_subnetwork_ip_ranges_to_nat="LIST_OF_SUBNETWORKS",
            subnetworks=[gcp.compute.RouterNatSubnetworkArgs(name=subnet.id,
                                                             source_ip_ranges_to_nats=["ALL_IP_RANGES"])],
            log_config=gcp.compute.RouterNatLogConfigArgs(enable=True, filter="ERRORS_ONLY"),
            opts=opts,
        )
        return network, subnet, [router, nat]

    def _firewall_rules(self, network: gcp.compute.Network, opts: pulumi.ResourceOptions) -> list[pulumi.Resource]:
        name, args, config = self._name, self._args, self._args.config
        log = gcp.compute.FirewallLogConfigArgs(metadata="INCLUDE_ALL_METADATA")
        rules: list[pulumi.Resource] = []

        def allow(suffix: str, description: str, sources: Sequence[str], protocol: str,
                  ports: Sequence[str] | None) -> None:
            rules.append(gcp.compute.Firewall(
                f"{name}-{suffix}",
                project=args.project,
                network=network.id,
                description=description,
                direction="INGRESS",
                priority=ALLOW_PRIORITY,
                source_ranges=list(sources),
                target_tags=[self._node_tag],
                allows=[gcp.compute.FirewallAllowArgs(protocol=protocol, ports=list(ports) if ports else None)],
                log_config=log if config.is_prod else None,
                opts=opts,
            ))

        # A passthrough load balancer: packets reach the nodes addressed to its own IP and ports, whichever node
        # the Envoy (or serving) pods run on; every pool carries the node tag.
        lb_ports = [str(port) for port in config.entry_ports]
        clients = config.access.endpoint_cidrs
        if config.access.internal_load_balancer:
            clients = (config.gcp.network_cidr,)
        # A firewall rule holds IPv4 or IPv6 ranges, not both.
        for version, suffix in ((4, ""), (6, "-v6")):
            sources = [c for c in clients if ip_network(c).version == version]
            if sources:
                allow(f"allow-lb-clients{suffix}",
                      f"servestack {config.stack}: the allowed clients to the serving load balancer's ports "
                      f"{', '.join(lb_ports)} (GKE adds the same rule from loadBalancerSourceRanges)",
                      sources, "tcp", lb_ports)
        # GKE adds the same rule for each load balancer it makes; ours keeps the probes working whatever
        # GKE's firewall reconciliation does.
        allow("allow-health-checks",
              f"servestack {config.stack}: Google's health checks to the serving Service's health-check node port",
              INTERNAL_HEALTH_CHECK_RANGES if config.access.internal_load_balancer else HEALTH_CHECK_RANGES,
              "tcp", [NODE_PORTS])
        allow("allow-control-plane",
              f"servestack {config.stack}: the GKE control plane to the kubelet and admission webhooks",
              [config.gcp.master_cidr], "tcp", CONTROL_PLANE_PORTS)
        for protocol in ("tcp", "udp", "icmp"):
            allow(f"allow-internal-{protocol}",
                  f"servestack {config.stack}: nodes and pods to nodes and pods inside the VPC ({protocol})",
                  [config.gcp.network_cidr, config.gcp.pods_cidr], protocol, None)
        rules.append(gcp.compute.Firewall(
            f"{name}-deny-all-ingress",
            project=args.project,
            network=network.id,
            description=f"servestack {config.stack}: deny and log every other ingress",
            direction="INGRESS",
            priority=DENY_ALL_PRIORITY,
            source_ranges=["0.0.0.0/0"],
            denies=[gcp.compute.FirewallDenyArgs(protocol="all")],
            # Scanners knock on the load balancer's address all day: logging every refusal costs money, worth
            # it in prod only.
            log_config=log if config.is_prod else None,
            opts=opts,
        ))
        return rules

    # --- identity --------------------------------------------------------------------------------

    def _node_service_account(self, opts: pulumi.ResourceOptions) -> gcp.serviceaccount.Account:
        name, args, config = self._name, self._args, self._args.config
        account = gcp.serviceaccount.Account(
            f"{name}-node-sa",
            project=args.project,
            account_id=_account_id(config.stack, "nodes"),
            display_name=f"servestack {config.stack} GKE nodes",
            description="GKE nodes: logs, metrics and image pulls; nothing else",
            opts=opts,
        )
        gcp.projects.IAMMember(
            f"{name}-node-sa-default-node-role",
            project=args.project,
            # GKE's least-privilege role for node service accounts (logging, monitoring, autoscaling metrics).
            role="roles/container.defaultNodeServiceAccount",
            member=account.email.apply(_sa_member),
            opts=pulumi.ResourceOptions(parent=self),
        )
        return account

    def _serving_identity(self, cluster: gcp.container.Cluster, bucket: gcp.storage.Bucket,
                          ) -> tuple[gcp.serviceaccount.Account, list[pulumi.Resource]]:
        """The serving pods' Google service account, and the grants their first start needs (the init
        container fetches the model as that account)."""
        name, args, config = self._name, self._args, self._args.config
        account = gcp.serviceaccount.Account(
            f"{name}-serving-sa",
            project=args.project,
            account_id=_account_id(config.stack, "serving"),
            display_name=f"servestack {config.stack} serving pods",
            description=f"Workload Identity of {config.serving.namespace}/{SERVING_SERVICE_ACCOUNT}: reads "
                        "the model bucket",
            opts=pulumi.ResourceOptions(parent=self, depends_on=self._apis),
        )
        workload_identity = gcp.serviceaccount.IAMMember(
            f"{name}-serving-workload-identity",
            service_account_id=account.name,
            role="roles/iam.workloadIdentityUser",
            member=workload_identity_member(args.project, config.serving.namespace, SERVING_SERVICE_ACCOUNT),
            # The workload pool exists once the cluster does.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[cluster]),
        )
        model_reader = gcp.storage.BucketIAMMember(
            f"{name}-serving-model-reader",
            bucket=bucket.name,
            role="roles/storage.objectViewer",
            member=account.email.apply(_sa_member),
            opts=pulumi.ResourceOptions(parent=self),
        )
        return account, [workload_identity, model_reader]

    def _acme_dns(self, cluster: gcp.container.Cluster) -> AcmeDns:
        """cert-manager's Google service account, bound to its Kubernetes service account and allowed (a custom role
        on the one managed zone) to change record sets there, for ACME DNS-01; and the hostname's A record."""
        name, args, config = self._name, self._args, self._args.config
        zone_name, hostname, stack = str(config.gateway.dns_zone), str(config.gateway.hostname), config.stack
        child = pulumi.ResourceOptions(parent=self)
        # The zone is looked up in gcp:project, where servestack:gateway.dnsZone names it.
        zone = gcp.dns.get_managed_zone_output(name=zone_name, project=args.project,
                                               opts=pulumi.InvokeOutputOptions(parent=self, depends_on=self._apis))

        def managed_zone(host: str) -> pulumi.Output[str]:
            """The zone's name, once the zone is known to hold `host` (the plan fails by name otherwise)."""
            return zone.apply(lambda found: _public_zone_holding(stack, host, zone_name, found))

        account = gcp.serviceaccount.Account(
            f"{name}-cert-manager-sa",
            project=args.project,
            account_id=_account_id(stack, "acme"),
            display_name=f"servestack {stack} cert-manager",
            description=f"Workload Identity of {CERT_MANAGER_NAMESPACE}/{CERT_MANAGER_SERVICE_ACCOUNT}: ACME DNS-01 "
                        f"records in the managed zone {zone_name}",
            opts=pulumi.ResourceOptions(parent=self, depends_on=self._apis),
        )
        workload_identity = gcp.serviceaccount.IAMMember(
            f"{name}-cert-manager-workload-identity",
            service_account_id=account.name,
            role="roles/iam.workloadIdentityUser",
            member=workload_identity_member(args.project, CERT_MANAGER_NAMESPACE, CERT_MANAGER_SERVICE_ACCOUNT),
            # The workload pool exists once the cluster does.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[cluster]),
        )
        # A deleted custom role keeps its id for up to 37 days: each life of the stack names its own.
        suffix = random.RandomString(f"{name}-acme-role-suffix", length=6, special=False, upper=False, opts=child)
        role = gcp.projects.IAMCustomRole(
            f"{name}-acme-dns01-role",
            project=args.project,
            role_id=pulumi.Output.concat(_role_id(f"servestack_{stack}_acme_dns01"), "_", suffix.result),
            title=f"servestack {stack} ACME DNS-01",
            description="cert-manager's DNS-01 solver: change the record sets of the zone it is granted on",
            permissions=list(ACME_DNS_PERMISSIONS),
            opts=child,
        )
        grant = gcp.dns.DnsManagedZoneIamMember(
            f"{name}-cert-manager-dns01",
            project=args.project,
            managed_zone=managed_zone(hostname),
            role=role.name,
            member=account.email.apply(_sa_member),
            opts=child,
        )

        def record(resource_name: str, host: str, address: pulumi.Output[str],
                   opts: pulumi.ResourceOptions) -> pulumi.Resource:
            return gcp.dns.RecordSet(resource_name, project=args.project, managed_zone=managed_zone(host),
                                     name=f"{host.rstrip('.')}.", type="A", ttl=dns.RECORD_TTL, rrdatas=[address],
                                     opts=opts)

        return AcmeDns(
            # Ambient credentials (the GKE metadata server), which cert-manager grants a ClusterIssuer by default.
            solver={"cloudDNS": {"project": args.project, "hostedZoneName": zone_name}},
            service_account_annotations={"iam.gke.io/gcp-service-account": account.email},
            pod_labels={},
            ready=(workload_identity, grant),
            record=record,
        )

    # --- registry and model store ----------------------------------------------------------------

    def _registry(self, node_sa: gcp.serviceaccount.Account,
                  opts: pulumi.ResourceOptions) -> gcp.artifactregistry.Repository:
        name, args, config = self._name, self._args, self._args.config
        registry = gcp.artifactregistry.Repository(
            f"{name}-registry",
            project=args.project,
            location=args.region,
            repository_id=_slug(f"servestack-{config.stack}", 63),
            format="DOCKER",
            description=f"servestack {config.stack}: the serving image",
            # Tags are deploy pins: in prod, a pushed tag can never be moved.
            docker_config=gcp.artifactregistry.RepositoryDockerConfigArgs(immutable_tags=config.is_prod),
            labels=self._labels,
            opts=opts,
        )
        gcp.artifactregistry.RepositoryIamMember(
            f"{name}-registry-node-reader",
            project=args.project,
            location=args.region,
            repository=registry.name,
            role="roles/artifactregistry.reader",
            member=node_sa.email.apply(_sa_member),
            opts=pulumi.ResourceOptions(parent=self),
        )
        return registry

    def _model_bucket(self, opts: pulumi.ResourceOptions) -> gcp.storage.Bucket:
        name, args, config = self._name, self._args, self._args.config
        return gcp.storage.Bucket(
            f"{name}-models",
            project=args.project,
            location=args.region.upper(),
            storage_class="STANDARD",
            uniform_bucket_level_access=True,
            public_access_prevention="enforced",
            versioning=gcp.storage.BucketVersioningArgs(enabled=True),
            # A replaced model file is kept for 30 days (and no more than the three newest), then deleted.
            lifecycle_rules=[gcp.storage.BucketLifecycleRuleArgs(
                action=gcp.storage.BucketLifecycleRuleActionArgs(type="Delete"),
                condition=gcp.storage.BucketLifecycleRuleConditionArgs(num_newer_versions=3,
                                                                       with_state="ARCHIVED"),
            ), gcp.storage.BucketLifecycleRuleArgs(
                action=gcp.storage.BucketLifecycleRuleActionArgs(type="Delete"),
                condition=gcp.storage.BucketLifecycleRuleConditionArgs(days_since_noncurrent_time=30,
                                                                       with_state="ARCHIVED"),
            )],
            force_destroy=not config.is_prod,
            labels=self._labels,
            opts=opts,
        )

    def _secrets_key(self, opts: pulumi.ResourceOptions) -> tuple[gcp.kms.CryptoKey, gcp.kms.CryptoKeyIAMMember]:
        """The key GKE encrypts Secrets in etcd with. Kept on destroy: GCP never deletes key rings, and
        data encrypted with a destroyed key is lost. Both names carry a suffix of this life of the stack, so
        that the next `up` after a `destroy` makes new ones instead of meeting the kept ones."""
        name, args = self._name, self._args
        kept = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(retain_on_delete=True))
        suffix = random.RandomString(f"{name}-kms-suffix", length=6, special=False, upper=False,
                                     opts=pulumi.ResourceOptions(parent=self)).result
        ring = gcp.kms.KeyRing(f"{name}-keyring", name=pulumi.Output.concat(f"servestack-{args.config.stack}-", suffix),
                               project=args.project, location=args.region, opts=kept)
        key = gcp.kms.CryptoKey(
            f"{name}-secrets-key",
            name=pulumi.Output.concat("secrets-", suffix),
            key_ring=ring.id,
            purpose="ENCRYPT_DECRYPT",
            rotation_period=KEY_ROTATION,
            labels=self._labels,
            opts=kept,
        )
        # The project lookup needs the Cloud Resource Manager API, which a new project may not have before
        # this stack enables it; the GKE service agent exists once the Kubernetes Engine API is enabled,
        # and ServiceIdentity makes sure it does before the grant names it.
        project = gcp.organizations.get_project_output(
            project_id=args.project, opts=pulumi.InvokeOutputOptions(parent=self, depends_on=self._apis))
        agent = gcp.projects.ServiceIdentity(f"{name}-gke-service-agent", project=args.project,
                                             service="container.googleapis.com", opts=opts)
        grant = gcp.kms.CryptoKeyIAMMember(
            f"{name}-secrets-key-gke",
            crypto_key_id=key.id,
            role="roles/cloudkms.cryptoKeyEncrypterDecrypter",
            # The GKE service agent encrypts and decrypts with it.
            member=project.number.apply(_gke_service_agent),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[agent]),
        )
        return key, grant

    # --- cluster ---------------------------------------------------------------------------------

    def _cluster(self, network: gcp.compute.Network, subnet: gcp.compute.Subnetwork,
                 node_sa: gcp.serviceaccount.Account, key: tuple[gcp.kms.CryptoKey, gcp.kms.CryptoKeyIAMMember] | None,
                 plumbing: Sequence[pulumi.Resource]) -> gcp.container.Cluster:
        name, args, config = self._name, self._args, self._args.config
        dns = config.access.api_access == "dns"
        # The IP endpoint admits the VPC (nodes) and, when public, the listed CIDR blocks.
        authorized = [config.gcp.network_cidr, *config.access.api_cidrs]
        # With a key, GKE must be allowed to use it before the cluster is created.
        depends: list[pulumi.Resource] = [*self._apis, *plumbing, *([key[1]] if key is not None else [])]
        return gcp.container.Cluster(
            f"{name}-cluster",
            project=args.project,
            location=args.region if config.gcp.regional else args.zones[0],
            description=f"servestack {config.stack}: GPU inference",
            network=network.id,
            subnetwork=subnet.id,
            networking_mode="VPC_NATIVE",
            ip_allocation_policy=gcp.container.ClusterIpAllocationPolicyArgs(
                cluster_secondary_range_name=PODS_RANGE, services_secondary_range_name=SERVICES_RANGE),
            # Node pools are managed on their own; the default pool is created and removed at once. It runs
            # as the node service account too, so that it never needs the Compute Engine default account.
            remove_default_node_pool=True,
            initial_node_count=1,
            node_config=gcp.container.ClusterNodeConfigArgs(
                service_account=node_sa.email,
                oauth_scopes=[CLOUD_PLATFORM_SCOPE],
                workload_metadata_config=gcp.container.ClusterNodeConfigWorkloadMetadataConfigArgs(
                    mode="GKE_METADATA"),
                shielded_instance_config=gcp.container.ClusterNodeConfigShieldedInstanceConfigArgs(
                    enable_secure_boot=True, enable_integrity_monitoring=True),
                metadata={"disable-legacy-endpoints": "true"},
                tags=[self._node_tag],
            ),
            private_cluster_config=gcp.container.ClusterPrivateClusterConfigArgs(
                enable_private_nodes=True,
                enable_private_endpoint=dns,
                master_ipv4_cidr_block=config.gcp.master_cidr,
            ),
            # The deployer and operators reach the API through the DNS endpoint from anywhere; IAM decides
            # who gets in (container.clusters.connect, in Kubernetes Engine Admin and Developer).
            control_plane_endpoints_config=gcp.container.ClusterControlPlaneEndpointsConfigArgs(
                dns_endpoint_config=gcp.container.ClusterControlPlaneEndpointsConfigDnsEndpointConfigArgs(
                    allow_external_traffic=True)) if dns else None,
            master_authorized_networks_config=gcp.container.ClusterMasterAuthorizedNetworksConfigArgs(
                cidr_blocks=[gcp.container.ClusterMasterAuthorizedNetworksConfigCidrBlockArgs(
                    cidr_block=cidr, display_name=_authorized_name(cidr, config.gcp.network_cidr))
                    for cidr in authorized],
                gcp_public_cidrs_access_enabled=False,
            ),
            master_auth=gcp.container.ClusterMasterAuthArgs(
                client_certificate_config=gcp.container.ClusterMasterAuthClientCertificateConfigArgs(
                    issue_client_certificate=False)),
            workload_identity_config=gcp.container.ClusterWorkloadIdentityConfigArgs(
                workload_pool=f"{args.project}.svc.id.goog"),
            # Google Groups for RBAC: a user's groups (members of gke-security-groups@) reach RoleBindings.
            authenticator_groups_config=gcp.container.ClusterAuthenticatorGroupsConfigArgs(
                security_group=config.gcp.security_group) if config.gcp.security_group else None,
            release_channel=gcp.container.ClusterReleaseChannelArgs(channel=config.gcp.release_channel),
            min_master_version=config.kubernetes_version,
            # Dataplane V2 enforces NetworkPolicy itself (the network_policy add-on must stay off with it).
            datapath_provider="ADVANCED_DATAPATH",
            enable_shielded_nodes=True,
            enable_legacy_abac=False,
            database_encryption=gcp.container.ClusterDatabaseEncryptionArgs(
                state="ENCRYPTED", key_name=key[0].id) if key is not None else None,
            logging_config=gcp.container.ClusterLoggingConfigArgs(
                enable_components=["SYSTEM_COMPONENTS", "WORKLOADS"]),
            monitoring_config=gcp.container.ClusterMonitoringConfigArgs(
                # DCGM: GPU metrics from GKE's managed DCGM exporter.
                enable_components=["SYSTEM_COMPONENTS", "DCGM"],
                managed_prometheus=gcp.container.ClusterMonitoringConfigManagedPrometheusArgs(enabled=True),
            ),
            # Give idle GPU nodes back sooner; node auto-provisioning stays off (the pools are explicit).
            cluster_autoscaling=gcp.container.ClusterClusterAutoscalingArgs(
                enabled=False, autoscaling_profile="OPTIMIZE_UTILIZATION"),
            maintenance_policy=gcp.container.ClusterMaintenancePolicyArgs(
                recurring_window=gcp.container.ClusterMaintenancePolicyRecurringWindowArgs(
                    start_time=PROD_MAINTENANCE_WINDOW[0], end_time=PROD_MAINTENANCE_WINDOW[1],
                    recurrence=PROD_MAINTENANCE_WINDOW[2])) if config.is_prod else None,
            deletion_protection=config.gcp.deletion_protection,
            resource_labels=self._labels,
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends,
                                        # GKE owns the default pool's config once it is gone.
                                        ignore_changes=["nodeConfig", "initialNodeCount"]),
        )

    def _node_config(self, node_sa: gcp.serviceaccount.Account, machine_type: str, disk_gb: int,
                     labels: dict[str, str], **extra: Any) -> gcp.container.NodePoolNodeConfigArgs:
        return gcp.container.NodePoolNodeConfigArgs(
            machine_type=machine_type,
            image_type="COS_CONTAINERD",
            disk_type="pd-balanced",
            disk_size_gb=disk_gb,
            service_account=node_sa.email,
            oauth_scopes=[CLOUD_PLATFORM_SCOPE],
            workload_metadata_config=gcp.container.NodePoolNodeConfigWorkloadMetadataConfigArgs(
                mode="GKE_METADATA"),
            shielded_instance_config=gcp.container.NodePoolNodeConfigShieldedInstanceConfigArgs(
                enable_secure_boot=True, enable_integrity_monitoring=True),
            metadata={"disable-legacy-endpoints": "true"},
            tags=[self._node_tag],
            labels=labels,
            resource_labels=self._labels,
            **extra,
        )

    def _system_pool(self, cluster: gcp.container.Cluster,
                     node_sa: gcp.serviceaccount.Account) -> gcp.container.NodePool:
        name, args, config = self._name, self._args, self._args.config
        return gcp.container.NodePool(
            f"{name}-system-pool",
            project=args.project,
            cluster=cluster.id,
            location=cluster.location,
            node_locations=list(args.zones) if config.gcp.regional else [args.zones[0]],
            initial_node_count=1,
            autoscaling=gcp.container.NodePoolAutoscalingArgs(
                total_min_node_count=2 if config.is_prod else 1, total_max_node_count=4 if config.is_prod else 3,
                location_policy="BALANCED"),
            management=gcp.container.NodePoolManagementArgs(auto_repair=True, auto_upgrade=True),
            node_config=self._node_config(node_sa, SYSTEM_MACHINE_TYPE, 50, SYSTEM_POOL_LABELS),
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["initialNodeCount"]),
        )

    def _gpu_pool(self, cluster: gcp.container.Cluster, node_sa: gcp.serviceaccount.Account,
                  system_pool: gcp.container.NodePool) -> gcp.container.NodePool:
        name, args, config = self._name, self._args, self._args.config
        gpu = config.gpu
        return gcp.container.NodePool(
            f"{name}-gpu-pool",
            project=args.project,
            cluster=cluster.id,
            location=cluster.location,
            node_locations=list(args.zones),
            # Created empty: a GPU stockout then never fails `pulumi up`; pending pods scale it up.
            initial_node_count=0,
            autoscaling=gcp.container.NodePoolAutoscalingArgs(
                total_min_node_count=gpu.min_nodes,
                total_max_node_count=gpu.max_nodes,
                # ANY takes whichever zone has capacity, which is what spot GPUs need.
                location_policy="ANY" if gpu.spot else "BALANCED",
            ),
            management=gcp.container.NodePoolManagementArgs(auto_repair=True, auto_upgrade=True),
            # Upgrades replace one GPU node at a time in place: no surge node, so no GPU quota or dollars
            # beyond maxNodes (and no wait on an L4 stockout); the serving PodDisruptionBudget allows one down.
            upgrade_settings=gcp.container.NodePoolUpgradeSettingsArgs(strategy="SURGE", max_surge=0,
                                                                       max_unavailable=1),
            node_config=self._node_config(
                node_sa, gpu.machine_type or "", gpu.disk_gb, {GPU_POOL_LABEL: GPU_POOL_VALUE},
                guest_accelerators=[gcp.container.NodePoolNodeConfigGuestAcceleratorArgs(
                    type=gpu.type or "",
                    count=gpu.count,
                    # GKE installs the driver (and runs its device plugin); LATEST carries the newest CUDA.
                    gpu_driver_installation_config=gcp.container
                    .NodePoolNodeConfigGuestAcceleratorGpuDriverInstallationConfigArgs(gpu_driver_version="LATEST"),
                )],
                # GKE adds this taint itself only when the cluster already has a non-GPU pool; declaring it
                # makes it certain (and matches what GKE would add, so nothing drifts).
                taints=[gcp.container.NodePoolNodeConfigTaintArgs(key=GPU_TAINT_KEY, value=GPU_TAINT_VALUE,
                                                                  effect=_gke_effect(GPU_TAINT_EFFECT))],
                spot=gpu.spot,
                # A spot node's notice is 30 s, of which GKE leaves non-system pods 15 s; extended, the serving pods
                # get GKE_SPOT_SHUTDOWN_SECONDS less the critical pods' share (the drain timeline in infra/drain.py).
                kubelet_config=gcp.container.NodePoolNodeConfigKubeletConfigArgs(
                    shutdown_grace_period_seconds=drain.GKE_SPOT_SHUTDOWN_SECONDS,
                    shutdown_grace_period_critical_pods_seconds=drain.GKE_SPOT_CRITICAL_PODS_SECONDS,
                ) if gpu.spot else None,
                # gVNIC: required by A3, faster on G2 and A2. Image streaming: the large serving image
                # starts before it is fully pulled, which shortens every scale-from-zero.
                gvnic=gcp.container.NodePoolNodeConfigGvnicArgs(enabled=True),
                gcfs_config=gcp.container.NodePoolNodeConfigGcfsConfigArgs(enabled=True),
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[system_pool],
                                        ignore_changes=["initialNodeCount"]),
        )


# --- helpers -------------------------------------------------------------------------------------


def _check(config: StackConfig) -> None:
    """What the GCP module needs beyond the generic config checks."""
    minor = tuple(int(part) for part in config.kubernetes_version.split(".")[:2])
    if config.gpu.spot and minor < SPOT_SHUTDOWN_MINOR:
        raise ConfigError(config.stack, [
            f"{NAMESPACE}:kubernetesVersion: {config.kubernetes_version!r}, but the spot GPU pool's graceful node "
            f"shutdown ({drain.GKE_SPOT_SHUTDOWN_SECONDS} s, which the serving pods' drain counts on) needs GKE "
            f"1.35.0-gke.1171000 or later: use {'.'.join(map(str, SPOT_SHUTDOWN_MINOR))} or later, or on-demand "
            f"nodes ({NAMESPACE}:gpu.spot false)"])


def _public_zone_holding(stack: str, hostname: str, zone_name: str, zone: Any) -> str:
    if zone.visibility != "public":
        raise ConfigError(stack, [
            f"{NAMESPACE}:gateway.dnsZone: {zone_name!r} is a {zone.visibility} zone ({zone.dns_name}); the ACME "
            "server and the endpoint's clients resolve the hostname in public DNS: name a public managed zone"])
    dns.name_in_zone(stack, hostname, zone_name, zone.dns_name)
    return zone_name


def _role_id(text: str) -> str:
    """A custom role id: letters, digits, underscores and periods, at most 64 (with room for a suffix)."""
    return re.sub(r"[^a-zA-Z0-9_.]+", "_", text)[:57]


def workload_identity_member(project: str, namespace: str, service_account: str) -> str:
    """The IAM member of a Kubernetes service account under Workload Identity."""
    return f"serviceAccount:{project}.svc.id.goog[{namespace}/{service_account}]"


def repository_url(region: str, project: str, repository_id: pulumi.Input[str]) -> pulumi.Output[str]:
    return pulumi.Output.concat(f"{region}-docker.pkg.dev/{project}/", repository_id)


def _slug(text: str, limit: int) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:limit].rstrip("-")


def _label(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", text.lower())[:63]


def _account_id(stack: str, role: str) -> str:
    """A service account id (6-30 characters) unique per stack and role."""
    prefix = _slug(f"ss-{stack}", 30 - len(role) - 1)
    return f"{prefix}-{role}"


def _sa_member(email: str) -> str:
    return f"serviceAccount:{email}"


def _gke_service_agent(project_number: str) -> str:
    return f"serviceAccount:service-{project_number}@container-engine-robot.iam.gserviceaccount.com"


def _gke_effect(effect: str) -> str:
    """Kubernetes' NoSchedule as GKE's API spells it: NO_SCHEDULE."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", effect).upper()


def _authorized_name(cidr: str, network_cidr: str) -> str:
    return "servestack VPC" if cidr == network_cidr else f"operators {cidr}"
