"""The stack's configuration: one frozen, validated tree read from the stack's Pulumi config.

Keys live in the `servestack` namespace (`servestack:gpu`, `servestack:access`, ...), beside the
providers' own keys (`aws:region`, `gcp:project`, `gcp:region`, `azure-native:location`). Every problem
is collected before anything is declared, and reported as one line naming the key, the value and what
is allowed; `load_stack_config` raises them together as a `ConfigError`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, TypeVar

import pulumi

from infra import catalog, drain, modelsize, versions

NAMESPACE = "servestack"
ENVIRONMENTS = ("dev", "staging", "prod")
# Kubernetes minor versions kubernetes-validate has schemas for; each cloud's window (infra/versions.py)
# narrows them to what it supports on the day of `pulumi up`.
KUBERNETES_VERSIONS = tuple(f"1.{minor}" for minor in range(30, 38))
# How the deployer reaches each cloud's Kubernetes API (AccessConfig), the default first.
API_ACCESS = {"aws": ("public",), "gcp": ("dns", "public"), "azure": ("public",), "local": ("public",)}
REGION_KEYS = {"aws": "aws:region", "gcp": "gcp:region", "azure": "azure-native:location"}
MODEL_URI_SCHEMES = ("s3://", "gs://", "az://", "abfs://")
# The image the serving image bakes its model into (serving/Dockerfile).
DEFAULT_IMAGE_REPOSITORY = "servestack-serving"
# An IAM role or user, as EKS access entries take them (admins, on-call).
_AWS_PRINCIPAL_ARN = re.compile(r"^arn:aws(-[a-z]+)*:iam::[0-9]{12}:(role|user)/[\w+=,.@/-]+$")


class ConfigError(pulumi.RunError):
    """The stack's config is invalid; `problems` holds one message per problem."""

    def __init__(self, stack: str, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"stack {stack}: invalid config ({len(self.problems)} problem(s)):\n{lines}")


@dataclass(frozen=True)
class GpuConfig:
    """The GPU node pool. `type` None means CPU only (allowed on `local`)."""

    type: str | None
    machine_type: str | None
    count: int  # GPUs per node, and per serving pod
    min_nodes: int
    max_nodes: int
    spot: bool
    disk_gb: int


@dataclass(frozen=True)
class AccessConfig:
    """Who may reach what.

    `api_access` is how the deployer (whoever runs `pulumi up`: a laptop, a CI runner) and the operators
    reach the Kubernetes API, which every Kubernetes object of the stack goes through: `public`, an API
    endpoint on the internet that admits only `api_cidrs` (nodes use the private one); `dns`, GKE's DNS
    endpoint, authorized by IAM, with the IP endpoints private. The network the stack creates does not
    exist before its first `pulumi up`, so a private-only endpoint would leave the deployer no way in.
    """

    endpoint_cidrs: tuple[str, ...]
    api_cidrs: tuple[str, ...]
    internal_load_balancer: bool
    api_access: str = "public"
    # Who on-call is, per cloud (infra/operators.py): EKS IAM role or user ARNs, Google Group e-mails (GKE
    # Google Groups for RBAC), Entra ID group object ids (AKS), Kubernetes group names (local).
    viewer_groups: tuple[str, ...] = ()
    operator_groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelConfig:
    """`source` is `image` (baked into the serving image), `bucket` (the stack's model bucket) or a URI.

    `revision` names one immutable version of the model's files: the bucket holds it under
    `models/<name>/<revision>/` with a manifest, and the server refuses any other."""

    name: str
    source: str
    disk_gb: int
    revision: str = "1"


@dataclass(frozen=True)
class ApiKeyConfig:
    """One client's API key: its id (on metrics and logs, never the key) and its limits per minute (0: none).
    A new `rotation` number makes a new key; the servers take it up without a restart."""

    client: str
    requests_per_minute: int
    tokens_per_minute: int
    rotation: int = 1


@dataclass(frozen=True)
class CanaryConfig:
    """A second revision beside the stable one, taking `weight` percent of the requests. Weight 0 deploys
    nothing; 100 promotes: the stable Deployment rolls to this revision and no canary pods remain."""

    revision: str
    weight: int


@dataclass(frozen=True)
class GatewayConfig:
    """The Gateway API entry in front of the servers (Envoy Gateway): TLS for `hostname`, from ACME
    (cert-manager) or from a certificate the stack config holds as secrets (`secret`); `none` is plain
    HTTP, never in prod."""

    enabled: bool
    hostname: str | None = None
    tls: str = "acme"
    acme_email: str | None = None
    acme_server: str = "https://acme-v02.api.letsencrypt.org/directory"
    # The cloud's DNS zone holding `hostname`: an AWS Route 53 hosted zone id, a Cloud DNS managed zone name
    # (in gcp:project), an Azure DNS zone's resource id. ACME's DNS-01 challenge and the hostname's record go
    # there.
    dns_zone: str | None = None
    # PEM text from the stack config's secrets servestack:tlsCertificate and servestack:tlsPrivateKey.
    certificate: str | None = None
    private_key: str | None = None

    @property
    def https(self) -> bool:
        return self.enabled and self.tls != "none"


@dataclass(frozen=True)
class ServingConfig:
    image: str | None  # full reference; None means the stack's registry + image_tag
    image_tag: str
    namespace: str
    min_replicas: int
    max_replicas: int
    cpu: str
    memory: str
    auth: bool
    api_keys: tuple[ApiKeyConfig, ...]
    port: int  # the Service's port (the load balancer's, where no gateway fronts the servers)
    drain_seconds: int
    max_batch_size: int
    canary: CanaryConfig | None = None

    @property
    def canary_pods(self) -> bool:
        """Whether a canary Deployment runs beside the stable one (weights 1 to 99)."""
        return self.canary is not None and 0 < self.canary.weight < 100

    @property
    def canary_max_replicas(self) -> int:
        """The canary's share of the replicas, at least one while it runs."""
        if self.canary is None or not self.canary_pods:
            return 0
        return max(1, math.ceil(self.max_replicas * self.canary.weight / 100))


@dataclass(frozen=True)
class MonitoringConfig:
    """The cluster's own Prometheus, Alertmanager and Grafana (kube-prometheus-stack), the serving pods' scrape
    and alert rules, GPU metrics (DCGM) and the cloud's container log pipeline. On by default in prod."""

    enabled: bool
    namespace: str = "monitoring"
    # The p95 time to first token the alert rules hold the servers to.
    ttft_slo_seconds: float = 2.0
    retention_days: int = 15
    storage_gb: int = 50


@dataclass(frozen=True)
class LocalConfig:
    kube_context: str | None
    kubeconfig: str | None
    # Whether the cluster has a load-balancer controller (cloud-provider-kind, MetalLB, a cloud's own); without
    # one a LoadBalancer Service never gets an address, so the Service is ClusterIP, reached by port-forward.
    load_balancer: bool = False


@dataclass(frozen=True)
class AwsConfig:
    availability_zones: int
    vpc_cidr: str
    nat_gateways: str | None  # "single" or "perAz"; None: perAz in prod, single elsewhere
    flow_logs: bool | None  # None: on in prod
    gpu_ami_type: str
    system_instance_type: str
    system_min_nodes: int
    system_max_nodes: int
    admin_principal_arns: tuple[str, ...]
    # How the AWS provider authenticates (aws:profile, one role of aws:assumeRoles), which the
    # kubeconfig's `aws eks get-token` repeats, so that Kubernetes sees the identity that made the cluster.
    profile: str | None = None
    role_arn: str | None = None


GKE_RELEASE_CHANNELS = ("RAPID", "REGULAR", "STABLE", "EXTENDED")


@dataclass(frozen=True)
class GcpConfig:
    project: str | None
    regional: bool  # a regional control plane (three replicas) rather than a zonal one
    network_cidr: str  # the nodes' subnetwork
    zones: tuple[str, ...] = ()  # where the GPU pool may run; empty means every zone offering the GPU
    release_channel: str = "REGULAR"
    pods_cidr: str = "10.64.0.0/14"  # the subnetwork's secondary range for pods
    services_cidr: str = "10.68.0.0/20"  # the subnetwork's secondary range for services
    master_cidr: str = "172.16.0.32/28"  # the control plane's private range (exactly a /28)
    # GKE refuses to delete the cluster while set: on by default in prod, turned off (and `up`) before a
    # `destroy`.
    deletion_protection: bool = False
    # Google Groups for RBAC: the domain's gke-security-groups@ group, which holds the on-call groups.
    security_group: str | None = None


# Azure CNI overlay's pod range and the cluster's service range: neither may overlap the VNet.
AZURE_POD_CIDR = "10.244.0.0/16"
AZURE_SERVICE_CIDR = "10.0.0.0/16"
AZURE_DNS_SERVICE_IP = "10.0.0.10"


@dataclass(frozen=True)
class AzureConfig:
    vnet_cidr: str
    system_vm_size: str  # the CPU system pool's VM size
    # Public ranges allowed through the model storage account's firewall (operators uploading models).
    storage_cidrs: tuple[str, ...]
    # How whoever runs `pulumi up` signs in, which the kubeconfig's kubelogin repeats: `azurecli` (the
    # Azure CLI's login), `spn` (ARM_CLIENT_ID/ARM_CLIENT_SECRET, as pulumi-azure-native reads them), `msi`
    # (a managed identity) or `workloadidentity` (AZURE_CLIENT_ID and AZURE_FEDERATED_TOKEN_FILE).
    deployer_login: str = "azurecli"
    # The deployer's principal type, for its role assignments; None: told from how it signed in.
    deployer_type: str | None = None


@dataclass(frozen=True)
class StackConfig:
    stack: str
    cloud: str
    environment: str
    region: str | None
    kubernetes_version: str
    budget_per_hour: float | None
    gpu: GpuConfig
    access: AccessConfig
    model: ModelConfig
    serving: ServingConfig
    local: LocalConfig
    aws: AwsConfig
    gcp: GcpConfig
    azure: AzureConfig
    gateway: GatewayConfig = GatewayConfig(enabled=False)
    monitoring: MonitoringConfig = MonitoringConfig(enabled=False)

    @property
    def is_prod(self) -> bool:
        return self.environment == "prod"

    @property
    def stable_revision(self) -> str:
        """What the stable Deployment serves: the model's revision, or the canary's once promoted (weight 100)."""
        canary = self.serving.canary
        return canary.revision if canary is not None and canary.weight == 100 else self.model.revision

    @property
    def entry_ports(self) -> tuple[int, ...]:
        """The ports of the one public load balancer: the gateway's listeners, or the serving Service's."""
        if self.gateway.enabled:
            return (80, 443) if self.gateway.https else (80,)
        return (self.serving.port,)

    def gpu_machine(self) -> catalog.GpuMachine | None:
        if self.cloud == "local" or self.gpu.machine_type is None:
            return None
        return catalog.machine(self.cloud, self.gpu.machine_type)


# --- reading ---------------------------------------------------------------------------------------

T = TypeVar("T")
_MISSING = object()


class _Reader:
    """Reads one config object, remembering each key's full name for messages and collecting problems."""

    def __init__(self, values: Mapping[str, Any], prefix: str, problems: list[str]) -> None:
        self._values = values
        self._prefix = prefix
        self.problems = problems
        self._seen: set[str] = set()

    def has(self, name: str) -> bool:
        return self._values.get(name) is not None

    def key(self, name: str) -> str:
        return f"{self._prefix}{name}"

    def problem(self, name: str, message: str) -> None:
        self.problems.append(f"{self.key(name)}: {message}")

    def _raw(self, name: str) -> Any:
        self._seen.add(name)
        return self._values.get(name, _MISSING)

    def _typed(self, name: str, default: T, kind: type, what: str, parse: Callable[[Any], Any]) -> T:
        raw = self._raw(name)
        if raw is _MISSING or raw is None:
            return default
        try:
            value = parse(raw)
        except (ValueError, TypeError):
            value = _MISSING
        if value is _MISSING or not isinstance(value, kind):
            self.problem(name, f"{raw!r} is not {what}")
            return default
        return value  # type: ignore[return-value]

    def text(self, name: str, default: Any = None, allowed: Sequence[str] | None = None,
             what: str = "an allowed value") -> Any:
        value = self._typed(name, default, str, "a string", lambda v: v)
        if allowed is not None and value is not None and value not in allowed:
            self.problem(name, f"{value!r} is not {what}; allowed: {', '.join(allowed)}")
            return default
        return value

    def integer(self, name: str, default: int, minimum: int | None = None, maximum: int | None = None) -> int:
        value = self._typed(name, default, int, "a whole number", _parse_int)
        if minimum is not None and value < minimum:
            self.problem(name, f"{value} is less than {minimum}; it must be at least {minimum}")
            return default
        if maximum is not None and value > maximum:
            self.problem(name, f"{value} is greater than {maximum}; it must be at most {maximum}")
            return default
        return value

    def number(self, name: str, default: float | None, minimum: float = 0.0) -> float | None:
        value: float | None = self._typed(name, default, float, "a number", _parse_float)
        if value is not None and value <= minimum:
            self.problem(name, f"{value} must be greater than {minimum:g}")
            return default
        return value

    def flag(self, name: str, default: bool) -> bool:
        return self._typed(name, default, bool, "true or false", _parse_bool)

    def listed(self, name: str) -> Any:
        """A list-valued key as given: None when missing; a string is JSON (as `pulumi config set` stores a
        list given on the command line) or else one item."""
        raw = self._raw(name)
        if raw is _MISSING or raw is None:
            return None
        if isinstance(raw, str):
            try:
                return json.loads(raw)
            except ValueError:
                return [raw]
        return raw

    def cidrs(self, name: str) -> tuple[str, ...]:
        raw = self.listed(name)
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.problem(name, f"{raw!r} is not a list of CIDR blocks")
            return ()
        good = []
        for i, item in enumerate(raw):
            try:
                good.append(str(ipaddress.ip_network(str(item), strict=False)))
            except ValueError:
                self.problem(f"{name}[{i}]", f"{item!r} is not a CIDR block; expected an address and "
                                             "prefix length such as 203.0.113.0/24 or 2001:db8::/32")
        return tuple(good)

    def object(self, name: str) -> _Reader:
        raw = self._raw(name)
        if raw is _MISSING or raw is None:
            raw = {}
        if isinstance(raw, str):
            with contextlib.suppress(ValueError):
                raw = json.loads(raw)
        if not isinstance(raw, Mapping):
            self.problem(name, f"{raw!r} is not an object")
            raw = {}
        return _Reader(raw, f"{self.key(name)}.", self.problems)

    def reject_unknown(self, what: str = "key") -> None:
        for name in sorted(set(self._values) - self._seen):
            known = ", ".join(sorted(self._seen))
            self.problem(name, f"unknown {what}; known: {known}")


def _parse_int(raw: Any) -> Any:
    if isinstance(raw, bool):
        raise TypeError
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    return int(raw) if isinstance(raw, str) else raw


def _parse_float(raw: Any) -> Any:
    if isinstance(raw, bool):
        raise TypeError
    return float(raw) if isinstance(raw, str | int | float) else raw


def _parse_bool(raw: Any) -> Any:
    if isinstance(raw, str):
        return {"true": True, "false": False}.get(raw.lower(), raw)
    return raw


def is_world(cidr: str) -> bool:
    """Any /0, IPv4 or IPv6: the whole internet."""
    return ipaddress.ip_network(cidr, strict=False).prefixlen == 0


# --- the tree --------------------------------------------------------------------------------------


def parse_config(stack: str, values: Mapping[str, Any], today: date | None = None) -> StackConfig:
    """Build the StackConfig from flat Pulumi config (`"ns:key" -> value`), or raise ConfigError.

    `today` decides which Kubernetes versions the clouds still support (infra/versions.py)."""
    today = today or versions.today()
    problems: list[str] = []
    ours = {k.split(":", 1)[1]: v for k, v in values.items() if k.startswith(f"{NAMESPACE}:")}
    root = _Reader(ours, f"{NAMESPACE}:", problems)

    cloud = root.text("cloud", None, allowed=catalog.CLOUDS, what="a known cloud")
    if cloud is None and "cloud" not in ours:
        root.problem("cloud", f"missing; allowed: {', '.join(catalog.CLOUDS)}")
    environment = root.text("environment", "dev", allowed=ENVIRONMENTS, what="a known environment")
    kubernetes_version = root.text("kubernetesVersion", "1.35", allowed=KUBERNETES_VERSIONS,
                                   what="a Kubernetes version servestack has schemas for")
    budget = root.number("budgetPerHour", None)

    region = None
    if cloud in REGION_KEYS:
        region = values.get(REGION_KEYS[cloud])
        if not region:
            problems.append(f"{REGION_KEYS[cloud]}: missing; the {cloud} stacks need a region "
                            f"(pulumi config set {REGION_KEYS[cloud]} <region>)")

    gpu = _gpu(root.object("gpu"), cloud)
    access = _access(root.object("access"), environment, cloud)
    model = _model(root.object("model"), cloud)
    serving = _serving(root.object("serving"), cloud)
    local = _local(root.object("local"), cloud)
    aws = _aws(root.object("aws"), values, cloud)
    gcp = _gcp(root.object("gcp"), values, cloud, environment)
    azure = _azure(root.object("azure"), access, cloud, values)
    gateway = _gateway(root.object("gateway"), cloud, values)
    monitoring = _monitoring(root.object("monitoring"), environment)
    for secret in ("tlsCertificate", "tlsPrivateKey"):
        root._raw(secret)  # read by _gateway
    root.reject_unknown()
    if monitoring.enabled and monitoring.namespace == serving.namespace:
        problems.append(f"{NAMESPACE}:monitoring.namespace: {monitoring.namespace!r} is the serving namespace; the "
                        "node exporter and DCGM exporter need host access, which the serving namespace's restricted "
                        "pod security refuses: name another namespace")
    if cloud is not None:
        _check_release(root, environment, model, serving, gateway)
    serving = _fit_drain(root, cloud, serving, gateway.enabled, gpu.spot and gpu.type is not None,
                         explicit=root.object("serving").has("drainSeconds"))
    if cloud in versions.RELEASES:
        _check_version_window(root, cloud, kubernetes_version, gcp.release_channel == "EXTENDED", today)
    on_call = access.viewer_groups or access.operator_groups
    if cloud == "gcp" and on_call and gcp.security_group is None:
        problems.append(f"{NAMESPACE}:gcp.securityGroup: missing, but {NAMESPACE}:access lists on-call Google Groups; "
                        "GKE sees a user's groups only through gke-security-groups@<your domain>: name it")
    if cloud == "aws":
        for key, groups in (("viewerGroups", access.viewer_groups), ("operatorGroups", access.operator_groups)):
            for i, arn in enumerate(groups):
                if arn in aws.admin_principal_arns:
                    problems.append(f"{NAMESPACE}:access.{key}[{i}]: {arn!r} is a cluster admin already "
                                    f"({NAMESPACE}:aws.adminPrincipalArns); EKS gives a principal one access entry")
    if cloud == "azure" and model.source == "bucket" and not azure.storage_cidrs:
        # The storage account's firewall denies by default: whoever uploads the model (and the first `up`,
        # which waits for it) must be admitted.
        problems.append(f"{NAMESPACE}:azure.storageCidrs: empty, but {NAMESPACE}:model.source is bucket: the "
                        "storage account's firewall would refuse the model's upload; list the uploader's address")

    if gpu.type is not None and cloud is not None:
        _check_model_fits(problems, model, gpu.type, serving.max_batch_size)

    if gpu.type is not None and cloud not in (None, "local"):
        # A rolling update at full scale starts one extra pod before it stops an old one (maxSurge 1,
        # maxUnavailable 0): the pool must have a node for it, or the rollout waits forever.
        pool_gpus = gpu.max_nodes * gpu.count
        canary = serving.canary_max_replicas
        needed = (serving.max_replicas + canary + 1) * gpu.count
        pods = f"{serving.max_replicas} pods" + (f", {canary} canary pod(s)" if canary else "")
        if needed > pool_gpus:
            problems.append(
                f"{NAMESPACE}:serving.maxReplicas: {pods}, plus the extra pod of a rolling "
                f"update, need {needed} GPUs but the GPU pool holds at most {pool_gpus} ({gpu.max_nodes} nodes x "
                f"{gpu.count}); raise {NAMESPACE}:gpu.maxNodes or lower maxReplicas")

    if problems:
        raise ConfigError(stack, problems)
    return StackConfig(stack=stack, cloud=cloud, environment=environment, region=region,
                       kubernetes_version=kubernetes_version, budget_per_hour=budget, gpu=gpu,
                       access=access, model=model, serving=serving, local=local, aws=aws, gcp=gcp,
                       azure=azure, gateway=gateway, monitoring=monitoring)


def _gpu(r: _Reader, cloud: str | None) -> GpuConfig:
    on_cloud = cloud not in (None, "local")
    allowed_types = catalog.gpu_types(cloud) if on_cloud and cloud else sorted(catalog.GPU_TYPES)
    gpu_type = r.text("type", None)
    if gpu_type == "none":
        gpu_type = None
    if gpu_type is not None and gpu_type not in allowed_types:
        where = f"on {cloud}" if on_cloud else "by servestack"
        r.problem("type", f"{gpu_type!r} is not a GPU type known {where}; allowed: {', '.join(allowed_types)}")
        gpu_type = None
    elif gpu_type is None and on_cloud and not r.has("type"):
        r.problem("type", f"missing; the {cloud} stacks need a GPU; allowed: {', '.join(allowed_types)}")

    machine_type = r.text("machineType", None)
    count = r.integer("count", 0, minimum=1) if r.has("count") else None
    # The serving engine runs a model on one GPU (no tensor parallelism, no engine per GPU yet).
    one_gpu = "the server uses one GPU per pod, so the others would sit idle; choose a GPU type and machine type " \
        "with one GPU"
    min_nodes = r.integer("minNodes", 0, minimum=0)
    max_nodes = r.integer("maxNodes", 2, minimum=1, maximum=100)
    if min_nodes > max_nodes:
        r.problem("minNodes", f"{min_nodes} is greater than {r.key('maxNodes')} ({max_nodes}); "
                              "minNodes must be <= maxNodes")
    spot = r.flag("spot", False)
    disk_gb = r.integer("diskGb", 100, minimum=20, maximum=4096)
    r.reject_unknown()

    if not on_cloud:
        if machine_type is not None:
            r.problem("machineType", f"{machine_type!r} is set but the local stack uses the nodes of an "
                                     "existing cluster; remove it")
        gpus = 0 if gpu_type is None else (count or 1)
        if gpus > 1:
            r.problem("count", f"{gpus} GPUs per pod: {one_gpu}")
        return GpuConfig(gpu_type, None, gpus, min_nodes, max_nodes, spot, disk_gb)

    machine = None
    if machine_type is not None and cloud:
        try:
            machine = catalog.machine(cloud, machine_type)
        except catalog.UnknownMachine:
            known = ", ".join(m.machine_type for m in catalog.machines(cloud)
                              if gpu_type is None or m.gpu_type == gpu_type)
            r.problem("machineType", f"{machine_type!r} is not a GPU machine type known on {cloud}; "
                                     f"allowed: {known}")
        else:
            if gpu_type is not None and machine.gpu_type != gpu_type:
                r.problem("machineType", f"{machine_type!r} carries {machine.gpu_type}, not the "
                                         f"configured {r.key('type')} {gpu_type}")
            elif count is not None and count != machine.gpus:
                r.problem("count", f"{count} does not match {machine_type}, which has {machine.gpus} GPU(s)")
    elif gpu_type is not None and cloud:
        machine = catalog.cheapest(cloud, gpu_type, count)
        if machine is None:
            r.problem("count", f"{count} GPUs of type {gpu_type} fit no machine type known on {cloud}")
    gpus = machine.gpus if machine else (count or 1)
    if machine is not None and gpus > 1:
        if machine_type is None and count is None:
            r.problem("type", f"{gpu_type} comes only in machines of several GPUs on {cloud} (the cheapest: "
                              f"{machine.machine_type}, {gpus} GPUs): {one_gpu}")
        else:
            r.problem("machineType" if machine_type is not None else "count",
                      f"{machine.machine_type} has {gpus} {machine.gpu_type} GPUs, and each serving pod would "
                      f"take them all: {one_gpu}")
    return GpuConfig(gpu_type, machine.machine_type if machine else machine_type, gpus, min_nodes,
                     max_nodes, spot, disk_gb)


def _access(r: _Reader, environment: str, cloud: str | None) -> AccessConfig:
    problems_before = len(r.problems)
    endpoint = r.cidrs("endpointCidrs")
    malformed = len(r.problems) > problems_before
    api = r.cidrs("apiCidrs")
    internal = r.flag("internalLoadBalancer", False)
    modes = API_ACCESS.get(cloud or "", ("public",))
    api_access = r.text("apiAccess", modes[0], allowed=modes, what=f"a way to reach the API on {cloud}")
    viewers = _access_groups(r, "viewerGroups", cloud)
    operators = _access_groups(r, "operatorGroups", cloud)
    r.reject_unknown()
    for i, group in enumerate(operators):
        if group in viewers:
            r.problem(f"operatorGroups[{i}]", f"{group!r} is also in {r.key('viewerGroups')}; list it in one "
                                              "(operators can view too)")
    for i, cidr in enumerate(endpoint):
        if is_world(cidr):
            r.problem(f"endpointCidrs[{i}]", f"{cidr!r} opens the endpoint to the whole internet, which is "
                                             "never allowed (an API key is no firewall); list the clients' "
                                             "CIDR blocks")
    for i, cidr in enumerate(api):
        if is_world(cidr):
            r.problem(f"apiCidrs[{i}]", f"{cidr!r} opens the Kubernetes API to the whole internet, which "
                                        "is never allowed; list the deployer's and the operators' CIDR blocks")
    # An empty list would leave the load balancer open to the world: say so rather than default to it.
    if not endpoint and not malformed and not internal:
        r.problem("endpointCidrs", "missing; list the CIDR blocks allowed to reach the endpoint, or set "
                                   f"{r.key('internalLoadBalancer')} to true")
    if cloud not in (None, "local"):
        _check_api_access(r, cloud, api_access, api)
    return AccessConfig(endpoint, api, internal, api_access, viewers, operators)


# What names an on-call group on each cloud (infra/operators.py binds them).
_ACCESS_GROUPS = {
    "aws": (_AWS_PRINCIPAL_ARN,
            "an IAM role or user ARN such as arn:aws:iam::123456789012:role/oncall (EKS gives it an access entry)"),
    "gcp": (re.compile(r"^[a-z0-9][a-z0-9._%+-]*@[a-z0-9.-]+\.[a-z]{2,}$"),
            "a Google Group e-mail such as oncall@example.com (a member of gke-security-groups@ of its domain)"),
    "azure": (re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"),
              "an Entra ID group's object id such as 00000000-0000-0000-0000-000000000000"),
    "local": (re.compile(r"^(?!system:)[A-Za-z0-9][A-Za-z0-9:._@-]{0,252}$"),
              "a Kubernetes group name such as oncall (not system:...)"),
}


def _access_groups(r: _Reader, name: str, cloud: str | None) -> tuple[str, ...]:
    raw = r.listed(name)
    if raw is None:
        return ()
    pattern, what = _ACCESS_GROUPS.get(cloud or "local", _ACCESS_GROUPS["local"])
    if not isinstance(raw, list):
        r.problem(name, f"{raw!r} is not a list; each item is {what}")
        return ()
    groups: list[str] = []
    for i, item in enumerate(raw):
        if not isinstance(item, str) or not pattern.match(item):
            r.problem(f"{name}[{i}]", f"{item!r} is not {what}")
        elif item in groups:
            r.problem(f"{name}[{i}]", f"{item!r} is listed twice")
        else:
            groups.append(item)
    return tuple(groups)


def _check_api_access(r: _Reader, cloud: str, api_access: str, api: tuple[str, ...]) -> None:
    """Refuse a stack whose Kubernetes objects the deployer could not reach."""
    if api_access == "public" and not api:
        dns = f", or set {r.key('apiAccess')} to dns (GKE's DNS endpoint, authorized by IAM)" if cloud == "gcp" else ""
        r.problem("apiCidrs", "missing, so the Kubernetes API's public endpoint would admit nobody, and the "
                              "machine running `pulumi up` (a laptop, a CI runner) sits outside the network this "
                              "stack creates, where the private endpoint is: every Kubernetes object of the stack "
                              "would time out. List the CIDR blocks of the deployer and the operators (the public "
                              f"endpoint admits only them; nodes use the private endpoint){dns}")
    elif api_access == "dns" and api:
        r.problem("apiCidrs", f"set, but {r.key('apiAccess')} is dns: the IP endpoint is private and the DNS "
                              "endpoint is authorized by IAM, so there is no public endpoint to restrict; remove "
                              f"apiCidrs, or set {r.key('apiAccess')} to public")


def _fit_drain(r: _Reader, cloud: str | None, serving: ServingConfig, behind_gateway: bool, spot: bool,
               explicit: bool) -> ServingConfig:
    """On spot nodes the whole termination (pause, drain, shutdown) must fit the cloud's preemption notice."""
    longest = drain.max_drain_seconds(cloud or "local", behind_gateway, spot)
    if longest is None or serving.drain_seconds <= longest:
        return serving
    notice = drain.SPOT_NOTICE_SECONDS[cloud or "local"]
    pause = drain.pre_stop_seconds(cloud or "local", behind_gateway)
    if longest < 1:
        r.problem("gpu.spot", f"true, but {cloud}'s preemption notice ({notice} s) leaves no time to drain after the "
                              f"{pause} s pause for the load balancer and the {drain.SHUTDOWN_SECONDS} s shutdown; "
                              "enable the gateway (servestack:gateway), or use on-demand nodes")
        return serving
    if explicit:
        r.problem("serving.drainSeconds", f"{serving.drain_seconds} does not fit {cloud}'s spot preemption notice "
                                          f"({notice} s, of which {pause} s pause and {drain.SHUTDOWN_SECONDS} s "
                                          f"shutdown); at most {longest} on spot nodes")
        return serving
    return dataclasses.replace(serving, drain_seconds=longest)


def _check_release(r: _Reader, environment: str, model: ModelConfig, serving: ServingConfig,
                   gateway: GatewayConfig) -> None:
    """What a prod endpoint must have (HTTPS, API keys), and what a canary needs."""
    if environment == "prod":
        if not gateway.enabled:
            r.problem("gateway.enabled", "false, but a prod stack serves HTTPS only, which the gateway terminates; "
                                         "remove the key or set it to true")
        elif not gateway.https:
            r.problem("gateway.tls", "'none' (plain HTTP), but a prod stack serves HTTPS only: the API keys, the "
                                     "prompts and the answers would cross the network in clear text; use acme or "
                                     "secret")
        if not serving.auth:
            r.problem("serving.auth", "false, but a prod stack always requires API keys; remove the key, and list "
                                      "the clients in serving.apiKeys")
    canary = serving.canary
    if canary is not None:
        if canary.revision == model.revision:
            r.problem("serving.canary.revision", f"{canary.revision!r} is the stable revision (model.revision); "
                                                 "a canary serves another one")
        if model.source == "image" and canary.weight > 0:
            r.problem("serving.canary", "set, but model.source is image: an image carries one revision; serve "
                                        "the model from the bucket or a URI to run a canary")


def _check_version_window(r: _Reader, cloud: str, minor: str, extended: bool, today: date) -> None:
    """The version must be one the cloud supports today (standard support, or GKE's Extended channel)."""
    release = versions.release(cloud, minor)
    offered = versions.describe_window(cloud, today, extended)
    if release is None or not release.supported(today, extended):
        if release is not None and today >= release.available:
            why = f"left {cloud}'s support on {release.end_of_standard_support}"
        elif release is not None:
            why = f"is not generally available on {cloud} until {release.available}"
        else:
            why = f"is not supported on {cloud}"
        r.problem("kubernetesVersion", f"{minor!r} {why}; supported on {cloud} on {today}: {offered}")


def _model(r: _Reader, cloud: str | None) -> ModelConfig:
    name = r.text("name", "tiny")
    source = r.text("source", "image")
    disk_gb = r.integer("diskGb", 20, minimum=1, maximum=2048)
    revision = r.text("revision", None)
    r.reject_unknown()
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,62}", name):
        r.problem("name", f"{name!r} is not a model name; use lower-case letters, digits, '.', '_' and "
                          "'-' (at most 63 characters)")
    if revision is None:
        r.problem("revision", "missing; name the revision of the model to serve (the one `servestack model push` "
                              "printed, or the one baked into the image)")
        revision = "1"
    else:
        _check_revision(r, "revision", revision)
    if source not in ("image", "bucket") and not source.startswith(MODEL_URI_SCHEMES):
        r.problem("source", f"{source!r} is not a model source; allowed: image, bucket, or a URI starting "
                            f"with {', '.join(MODEL_URI_SCHEMES)}")
    if source == "bucket" and cloud == "local":
        r.problem("source", "'bucket' needs the stack's model bucket, and the local stack has none; use image "
                            "or a URI")
    return ModelConfig(name, source, disk_gb, revision)


def _check_model_fits(problems: list[str], model: ModelConfig, gpu_type: str, batch: int) -> None:
    """Weights plus the cache of a full batch at full context, with headroom, must fit one GPU (the server
    uses one per pod). Only models whose config.json servestack holds (infra/models/) can be sized."""
    try:
        shape = modelsize.known(model.name)
    except modelsize.ModelSizeError as error:
        problems.append(f"{NAMESPACE}:model.name: {error}")
        return
    if shape is None:
        return
    needed, gpu = modelsize.needed_bytes(shape, batch), catalog.GPU_TYPES[gpu_type]
    if needed <= gpu.memory_bytes:
        return
    per_sequence = shape.kv_cache_bytes(1)
    room = gpu.memory_bytes / (1 + modelsize.FIT_HEADROOM) - shape.weight_bytes()
    fitting = max(0, int(room // per_sequence))
    gib = modelsize.GIB
    problems.append(
        f"{NAMESPACE}:model.name: {model.name} needs {needed / gib:.2f} GiB on one GPU (weights "
        f"{shape.weight_bytes() / gib:.2f} GiB in {modelsize.GPU_DTYPE}, key-value cache "
        f"{shape.kv_cache_bytes(batch) / gib:.2f} GiB for {NAMESPACE}:serving.maxBatchSize {batch} sequences of "
        f"{shape.max_model_len} tokens, plus "
        f"{modelsize.FIT_HEADROOM:.0%} headroom), but {NAMESPACE}:gpu.type {gpu_type} has "
        f"{gpu.memory_bytes / gib:.2f} GiB; "
        + (f"lower maxBatchSize to at most {fitting} or choose a larger GPU" if fitting else "choose a larger GPU"))


# A revision is a path segment in the bucket and a Kubernetes label value. The same as serving/manifest.py's
# (the program cannot import the serving package: Pulumi runs infra/ with infra/ first on the path, where
# serving.py is this program's module); tests/serving/test_manifest.py keeps the two equal.
_REVISION = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")


def _check_revision(r: _Reader, name: str, revision: str) -> None:
    if not _REVISION.match(revision):
        r.problem(name, f"{revision!r} is not a revision; use lower-case letters, digits, '.', '_' and '-', "
                        "starting and ending with a letter or digit (at most 63 characters)")


_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _serving(r: _Reader, cloud: str | None) -> ServingConfig:
    image = r.text("image", None)
    image_tag = r.text("imageTag", "0.1.0")
    namespace = r.text("namespace", "servestack")
    min_replicas = r.integer("minReplicas", 1, minimum=1, maximum=100)
    max_replicas = r.integer("maxReplicas", min_replicas, minimum=1, maximum=100)
    cpu = r.text("cpu", "2")
    memory = r.text("memory", "8Gi")
    if r.has("apiKey"):
        r._raw("apiKey")
        r.problem("apiKey", f"replaced by {r.key('auth')} (true or false) and {r.key('apiKeys')} (one key per "
                            "client, each with its limits); remove it")
    auth = r.flag("auth", True)
    api_keys = _api_keys(r, "apiKeys") if auth else ()
    port = r.integer("port", 80, minimum=1, maximum=65535)
    drain_seconds = r.integer("drainSeconds", drain.DEFAULT_DRAIN_SECONDS, minimum=1, maximum=3600)
    max_batch_size = r.integer("maxBatchSize", 16, minimum=1, maximum=1024)
    for old, new in (("prometheusOperator", "enabled"), ("monitoringNamespace", "namespace")):
        if r.has(old):
            r._raw(old)
            r.problem(old, f"replaced by {NAMESPACE}:monitoring.{new} (see the README's Observability); remove it")
    canary = _canary(r.object("canary")) if r.has("canary") else None
    r.reject_unknown()
    if min_replicas > max_replicas:
        r.problem("minReplicas", f"{min_replicas} is greater than {r.key('maxReplicas')} ({max_replicas}); "
                                 "minReplicas must be <= maxReplicas")
    for name, value in (("cpu", cpu), ("memory", memory)):
        if not _QUANTITY.match(value):
            r.problem(name, f"{value!r} is not a Kubernetes quantity such as 2, 500m or 8Gi")
    if not _DNS_LABEL.match(namespace):
        r.problem("namespace", f"{namespace!r} is not a Kubernetes namespace name (lower-case DNS label)")
    if image is None and cloud == "local":
        r.problem("image", "missing; the local stack has no registry of its own, so name the image "
                           "(for example servestack-serving:0.1.0)")
    if image is not None and (image.endswith(":latest") or ("@" not in image and ":" not in image.rsplit("/", 1)[-1])):
        r.problem("image", f"{image!r} has no fixed version; pin it by tag (not latest) or by digest")
    return ServingConfig(image, image_tag, namespace, min_replicas, max_replicas, cpu, memory, auth, api_keys,
                         port, drain_seconds, max_batch_size, canary)


# A client id is a Prometheus label value and part of a Pulumi resource name.
_CLIENT_ID = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
DEFAULT_API_KEYS = (ApiKeyConfig("default", requests_per_minute=600, tokens_per_minute=1_000_000),)


def _api_keys(r: _Reader, name: str) -> tuple[ApiKeyConfig, ...]:
    raw = r._raw(name)
    if raw is _MISSING or raw is None:
        return DEFAULT_API_KEYS
    if isinstance(raw, str):
        with contextlib.suppress(ValueError):
            raw = json.loads(raw)
    if not isinstance(raw, list) or not raw:
        r.problem(name, f"{raw!r} is not a list of clients such as [{{client: team-a, requestsPerMinute: 600, "
                        "tokensPerMinute: 1000000}]")
        return DEFAULT_API_KEYS
    keys: list[ApiKeyConfig] = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping):
            r.problem(f"{name}[{i}]", f"{item!r} is not an object with client, requestsPerMinute, tokensPerMinute")
            continue
        k = _Reader(item, f"{r.key(name)}[{i}].", r.problems)
        client = k.text("client", None)
        rpm = k.integer("requestsPerMinute", 600, minimum=0, maximum=1_000_000)
        tpm = k.integer("tokensPerMinute", 1_000_000, minimum=0, maximum=1_000_000_000)
        rotation = k.integer("rotation", 1, minimum=1, maximum=1_000_000)
        k.reject_unknown()
        if client is None:
            k.problem("client", "missing; name the client (it labels metrics and logs in place of the key)")
        elif not _CLIENT_ID.match(client):
            k.problem("client", f"{client!r} is not a client id; use lower-case letters, digits and '-' "
                                "(at most 63 characters)")
        elif any(key.client == client for key in keys):
            k.problem("client", f"{client!r} is listed twice; each client has one key")
        else:
            keys.append(ApiKeyConfig(client, rpm, tpm, rotation))
    return tuple(keys)


def _canary(r: _Reader) -> CanaryConfig:
    revision = r.text("revision", None)
    weight = r.integer("weight", 0, minimum=0, maximum=100)
    r.reject_unknown()
    if revision is None:
        r.problem("revision", "missing; name the model revision the canary serves")
        revision = "1"
    else:
        _check_revision(r, "revision", revision)
    return CanaryConfig(revision, weight)


ACME_SERVERS = {"letsencrypt": "https://acme-v02.api.letsencrypt.org/directory",
                "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory"}
TLS_MODES = ("acme", "secret", "none")
# servestack:gateway.dnsZone on each cloud: its form, and how to say it.
DNS_ZONE_FORMS = {
    "aws": (re.compile(r"^Z[A-Z0-9]{1,31}$"), "a Route 53 hosted zone id such as Z0123456789ABCDEFGHIJ"),
    "gcp": (re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"),
            "a Cloud DNS managed zone name such as servestack-example"),
    "azure": (re.compile(r"^/subscriptions/[0-9a-fA-F-]{36}/resourceGroups/[^/]+/providers/Microsoft\.Network/"
                         r"dnszones/[^/]+$", re.IGNORECASE),
              "an Azure DNS zone's resource id such as /subscriptions/SUBSCRIPTION/resourceGroups/GROUP/providers/"
              "Microsoft.Network/dnszones/example.com"),
}
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _gateway(r: _Reader, cloud: str | None, values: Mapping[str, Any]) -> GatewayConfig:
    enabled = r.flag("enabled", cloud not in (None, "local"))
    hostname = r.text("hostname", None)
    tls = r.text("tls", "acme", allowed=TLS_MODES, what="a TLS mode")
    email = r.text("acmeEmail", None)
    server = r.text("acmeServer", "letsencrypt")
    dns_zone = r.text("dnsZone", None)
    r.reject_unknown()
    certificate = values.get(f"{NAMESPACE}:tlsCertificate")
    private_key = values.get(f"{NAMESPACE}:tlsPrivateKey")
    if not enabled:
        return GatewayConfig(enabled=False)
    if hostname is not None and not _HOSTNAME.match(hostname):
        r.problem("hostname", f"{hostname!r} is not a DNS name such as api.example.com (lower case, no wildcard)")
    if tls != "none" and hostname is None:
        r.problem("hostname", f"missing; the certificate of the HTTPS listener is for one DNS name, such as "
                              f"api.example.com (or set {r.key('tls')} to none: plain HTTP, never in prod)")
    if dns_zone is not None and cloud in DNS_ZONE_FORMS and not DNS_ZONE_FORMS[cloud][0].match(dns_zone):
        r.problem("dnsZone", f"{dns_zone!r} is not {DNS_ZONE_FORMS[cloud][1]}")
    if dns_zone is not None and cloud not in DNS_ZONE_FORMS:
        r.problem("dnsZone", f"set, but the {cloud} stack manages no DNS zone; remove it")
    if tls == "acme":
        if cloud not in DNS_ZONE_FORMS:
            r.problem("tls", f"'acme', but the {cloud} stack has no DNS zone for the ACME challenge; use secret "
                             "(a certificate in the stack config) or none")
        elif dns_zone is None:
            r.problem("dnsZone", f"missing; ACME proves the hostname through a DNS record (DNS-01: the endpoint "
                                 f"admits only access.endpointCidrs, so an HTTP challenge could not reach it); name "
                                 f"{DNS_ZONE_FORMS[cloud][1]}, or set {r.key('tls')} to secret")
        if email is None or not _EMAIL.match(email):
            r.problem("acmeEmail", f"{email!r} is not an e-mail address; the ACME server sends expiry notices there"
                      if email is not None else "missing; the ACME server (Let's Encrypt) needs an e-mail address")
        if server not in ACME_SERVERS and not server.startswith("https://"):
            r.problem("acmeServer", f"{server!r} is not an ACME server; allowed: {', '.join(ACME_SERVERS)} or an "
                                    "https:// directory URL")
    if tls == "secret":
        for key, value in (("tlsCertificate", certificate), ("tlsPrivateKey", private_key)):
            if not value:
                r.problems.append(f"{NAMESPACE}:{key}: missing, but {r.key('tls')} is secret; set it from a PEM "
                                  f"file: pulumi config set --secret {NAMESPACE}:{key} < FILE.pem")
    return GatewayConfig(enabled=True, hostname=hostname, tls=tls, acme_email=email,
                         acme_server=ACME_SERVERS.get(server, server), dns_zone=dns_zone,
                         certificate=str(certificate) if certificate else None,
                         private_key=str(private_key) if private_key else None)


def _monitoring(r: _Reader, environment: str) -> MonitoringConfig:
    enabled = r.flag("enabled", environment == "prod")
    namespace = r.text("namespace", "monitoring")
    ttft = r.number("ttftSloSeconds", 2.0)
    retention = r.integer("retentionDays", 15, minimum=1, maximum=365)
    storage = r.integer("storageGb", 50, minimum=10, maximum=10_000)
    r.reject_unknown()
    if not _DNS_LABEL.match(namespace):
        r.problem("namespace", f"{namespace!r} is not a Kubernetes namespace name (lower-case DNS label)")
    return MonitoringConfig(enabled=enabled, namespace=namespace, ttft_slo_seconds=ttft or 2.0,
                            retention_days=retention, storage_gb=storage)


def _local(r: _Reader, cloud: str | None) -> LocalConfig:
    config = LocalConfig(kube_context=r.text("kubeContext", None), kubeconfig=r.text("kubeconfig", None),
                         load_balancer=r.flag("loadBalancer", False))
    r.reject_unknown()
    # Never fall back to whatever cluster the operator's current context happens to point at.
    if cloud == "local" and config.kube_context is None:
        r.problem("kubeContext", "missing; the local stack deploys to an existing cluster: name its "
                                 "kubeconfig context")
    return config


def _private_cidr(r: _Reader, name: str, default: str) -> str:
    value: str = r.text(name, default)
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError:
        r.problem(name, f"{value!r} is not a CIDR block such as {default}")
        return default
    if not network.is_private or network.version != 4 or not 8 <= network.prefixlen <= 20:
        r.problem(name, f"{value!r} must be a private IPv4 range between /8 and /20, such as {default}")
        return default
    return value


AWS_NAT_GATEWAYS = ("single", "perAz")
# EKS managed node group AMI types that carry the NVIDIA driver (Bottlerocket also the device plugin).
AWS_GPU_AMI_TYPES = ("BOTTLEROCKET_x86_64_NVIDIA", "AL2023_x86_64_NVIDIA")
_AWS_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")


# Provider settings whose credentials `aws eks get-token` (the kubeconfig) could not use.
_AWS_CREDENTIAL_KEYS = ("aws:accessKey", "aws:secretKey", "aws:token", "aws:assumeRoleWithWebIdentity")


def _aws_identity(values: Mapping[str, Any], problems: list[str]) -> tuple[str | None, str | None]:
    """The AWS provider's profile and assumed role, as the kubeconfig's `aws eks get-token` can repeat them."""
    for key in _AWS_CREDENTIAL_KEYS:
        if values.get(key):
            problems.append(f"{key}: set in the stack config, where `aws eks get-token` (the cluster's kubeconfig) "
                            "cannot read it, so Kubernetes would see another identity than the one that made the "
                            "cluster; use aws:profile, or the AWS_* environment variables, which both read")
    profile = values.get("aws:profile")
    raw = values.get("aws:assumeRoles")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raw = [raw]
    roles = raw if isinstance(raw, list) else [] if raw is None else [raw]
    role_arn = None
    if len(roles) > 1:
        problems.append(f"aws:assumeRoles: {len(roles)} roles in a chain, but `aws eks get-token` (the cluster's "
                        "kubeconfig) assumes one; put the chain in an AWS profile (source_profile) and set "
                        "aws:profile")
    elif roles:
        role = roles[0]
        arn = role.get("roleArn") if isinstance(role, Mapping) else None
        if not isinstance(arn, str) or not _AWS_PRINCIPAL_ARN.match(arn):
            problems.append(f"aws:assumeRoles[0]: {role!r} has no roleArn such as "
                            "arn:aws:iam::123456789012:role/deployer")
        elif any(role.get(k) for k in ("externalId", "policy", "policyArns", "transitiveTagKeys", "tags")):
            problems.append("aws:assumeRoles[0]: sets more than roleArn and sessionName, which `aws eks "
                            "get-token --role-arn` (the cluster's kubeconfig) cannot repeat; put the role in an "
                            "AWS profile and set aws:profile")
        else:
            role_arn = arn
    return (str(profile) if profile else None), role_arn


def _aws(r: _Reader, values: Mapping[str, Any], cloud: str | None) -> AwsConfig:
    zones = r.integer("availabilityZones", 2, minimum=2, maximum=3)
    vpc_cidr = _private_cidr(r, "vpcCidr", "10.0.0.0/16")
    nat = r.text("natGateways", None, allowed=AWS_NAT_GATEWAYS)
    flow_logs = r.flag("flowLogs", False) if r.has("flowLogs") else None
    ami_type = r.text("gpuAmiType", AWS_GPU_AMI_TYPES[0], allowed=AWS_GPU_AMI_TYPES)
    system_type = r.text("systemInstanceType", "m6i.large")
    system_min = r.integer("systemMinNodes", 2, minimum=1, maximum=10)
    system_max = r.integer("systemMaxNodes", max(system_min, 3), minimum=1, maximum=20)
    admins = r._raw("adminPrincipalArns")
    r.reject_unknown()
    if not _AWS_INSTANCE_TYPE.match(system_type):
        r.problem("systemInstanceType", f"{system_type!r} is not an EC2 instance type such as m6i.large")
    if system_min > system_max:
        r.problem("systemMinNodes", f"{system_min} is greater than {r.key('systemMaxNodes')} ({system_max}); "
                                    "systemMinNodes must be <= systemMaxNodes")
    arns: list[str] = []
    if admins is not _MISSING and admins is not None:
        if isinstance(admins, str):
            try:
                admins = json.loads(admins)
            except ValueError:
                admins = [admins]
        if not isinstance(admins, list):
            r.problem("adminPrincipalArns", f"{admins!r} is not a list of IAM role or user ARNs")
            admins = []
        for i, arn in enumerate(admins):
            if isinstance(arn, str) and _AWS_PRINCIPAL_ARN.match(arn):
                arns.append(arn)
            else:
                r.problem(f"adminPrincipalArns[{i}]", f"{arn!r} is not an IAM role or user ARN such as "
                                                      "arn:aws:iam::123456789012:role/platform-admin")
    profile, role_arn = _aws_identity(values, r.problems) if cloud == "aws" else (None, None)
    return AwsConfig(availability_zones=zones, vpc_cidr=vpc_cidr, nat_gateways=nat, flow_logs=flow_logs,
                     gpu_ami_type=ami_type, system_instance_type=system_type, system_min_nodes=system_min,
                     system_max_nodes=system_max, admin_principal_arns=tuple(arns), profile=profile,
                     role_arn=role_arn)


# Provider credentials in the stack config, which the kubeconfig's gke-gcloud-auth-plugin (Application
# Default Credentials) cannot read.
_GCP_CREDENTIAL_KEYS = ("gcp:credentials", "gcp:accessToken", "gcp:impersonateServiceAccount")


def _gcp(r: _Reader, values: Mapping[str, Any], cloud: str | None, environment: str) -> GcpConfig:
    project = values.get("gcp:project")
    if cloud == "gcp" and not project:
        r.problems.append("gcp:project: missing; the gcp stacks need a project "
                           "(pulumi config set gcp:project <project-id>)")
    for key in _GCP_CREDENTIAL_KEYS if cloud == "gcp" else ():
        if values.get(key):
            r.problems.append(f"{key}: set in the stack config, where the cluster's kubeconfig (gke-gcloud-auth-plugin "
                              "with Application Default Credentials) cannot read it, so Kubernetes would see another "
                              "identity than the one that made the cluster; point Application Default Credentials "
                              "at that identity instead (GOOGLE_APPLICATION_CREDENTIALS, or `gcloud auth "
                              "application-default login [--impersonate-service-account SA]`), which both read")
    defaults = GcpConfig(project=None, regional=False, network_cidr="10.10.0.0/20")
    config = GcpConfig(
        project=project,
        regional=r.flag("regional", defaults.regional),
        network_cidr=_private_cidr(r, "networkCidr", defaults.network_cidr),
        zones=_gcp_zones(r, values.get("gcp:region")),
        release_channel=r.text("releaseChannel", defaults.release_channel, allowed=GKE_RELEASE_CHANNELS,
                               what="a GKE release channel"),
        pods_cidr=_gcp_range(r, "podsCidr", defaults.pods_cidr, shortest=21, longest=9),
        services_cidr=_gcp_range(r, "servicesCidr", defaults.services_cidr, shortest=27, longest=16),
        master_cidr=_gcp_range(r, "masterCidr", defaults.master_cidr, shortest=28, longest=28),
        deletion_protection=r.flag("deletionProtection", environment == "prod"),
        security_group=r.text("securityGroup", None),
    )
    r.reject_unknown()
    if config.security_group is not None and not _GKE_SECURITY_GROUP.match(config.security_group):
        r.problem("securityGroup", f"{config.security_group!r} is not gke-security-groups@ of a domain, the only "
                                   "group GKE's Google Groups for RBAC reads, such as gke-security-groups@example.com")
    ranges = {"networkCidr": config.network_cidr, "podsCidr": config.pods_cidr,
              "servicesCidr": config.services_cidr, "masterCidr": config.master_cidr}
    names = list(ranges)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            if ipaddress.ip_network(ranges[first]).overlaps(ipaddress.ip_network(ranges[second])):
                r.problem(second, f"{ranges[second]!r} overlaps {r.key(first)} ({ranges[first]}); the "
                                  "GKE ranges must be disjoint")
    return config


def _gcp_range(r: _Reader, name: str, default: str, shortest: int, longest: int) -> str:
    """A private IPv4 range whose prefix length lies between `longest` and `shortest`."""
    value: str = r.text(name, default)
    size = f"a /{longest}" if longest == shortest else f"between /{longest} and /{shortest}"
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError:
        r.problem(name, f"{value!r} is not a CIDR block such as {default}")
        return default
    if not network.is_private or network.version != 4 or not longest <= network.prefixlen <= shortest:
        r.problem(name, f"{value!r} must be a private IPv4 range {size}, such as {default}")
        return default
    return value


_GKE_SECURITY_GROUP = re.compile(r"^gke-security-groups@[a-z0-9.-]+\.[a-z]{2,}$")
_GCP_ZONE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")


def _gcp_zones(r: _Reader, region: Any) -> tuple[str, ...]:
    """Zone names, each in the stack's region; whether the GPU is offered there is checked by the gcp module."""
    raw = r.listed("zones")
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw:
        r.problem("zones", f"{raw!r} is not a non-empty list of zones such as [\"us-central1-a\"]")
        return ()
    zones = []
    for i, zone in enumerate(raw):
        if not isinstance(zone, str) or not _GCP_ZONE.match(zone):
            r.problem(f"zones[{i}]", f"{zone!r} is not a zone name such as us-central1-a")
        elif region and not zone.startswith(f"{region}-"):
            r.problem(f"zones[{i}]", f"{zone!r} is not in the stack's region gcp:region ({region})")
        elif zone in zones:
            r.problem(f"zones[{i}]", f"{zone!r} is listed twice")
        else:
            zones.append(zone)
    return tuple(zones)


_AZURE_VM_SIZE = re.compile(r"^Standard_[A-Za-z0-9_]+$")
AZURE_DEPLOYER_LOGINS = ("azurecli", "spn", "msi", "workloadidentity")
_RFC1918 = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")


# Provider credentials in the stack config, which the kubeconfig's kubelogin (reading the environment)
# cannot repeat.
_AZURE_CREDENTIAL_KEYS = ("azure-native:clientSecret", "azure-native:clientCertificatePath",
                          "azure-native:clientCertificatePassword", "azure-native:oidcToken",
                          "azure-native:oidcTokenFilePath")


def _azure(r: _Reader, access: AccessConfig, cloud: str | None, values: Mapping[str, Any]) -> AzureConfig:
    vnet_cidr = _private_cidr(r, "vnetCidr", "10.20.0.0/16")
    if r.has("privateCluster"):
        r._raw("privateCluster")
        r.problem("privateCluster", "no longer a key: how the deployer reaches the API server is "
                                    f"{NAMESPACE}:access.apiAccess (see docs/azure.md)")
    system_vm_size = r.text("systemVmSize", "Standard_D4ds_v5")
    storage_cidrs = r.cidrs("storageCidrs")
    deployer_login = r.text("deployerLogin", "azurecli", allowed=AZURE_DEPLOYER_LOGINS, what="a kubelogin login mode")
    deployer_type = r.text("deployerType", None, allowed=("User", "ServicePrincipal"), what="a principal type")
    r.reject_unknown()
    if deployer_type == "User" and deployer_login != "azurecli":
        r.problem("deployerType", f"'User', but {r.key('deployerLogin')} is {deployer_login!r}, which signs in an "
                                  "application or managed identity (a ServicePrincipal); set deployerType to "
                                  "ServicePrincipal, or remove it")
    vnet = ipaddress.ip_network(vnet_cidr)
    for name, cidr in (("pod", AZURE_POD_CIDR), ("service", AZURE_SERVICE_CIDR)):
        if vnet.overlaps(ipaddress.ip_network(cidr)):
            r.problem("vnetCidr", f"{vnet_cidr!r} overlaps the cluster's {name} range {cidr}; choose a range "
                                  "outside it, such as 10.20.0.0/16")
    on_azure = cloud == "azure"
    for key in _AZURE_CREDENTIAL_KEYS if on_azure else ():
        if values.get(key):
            r.problems.append(f"{key}: set in the stack config, where the cluster's kubeconfig (kubelogin, reading "
                              "the environment) cannot read it, so Kubernetes would see another identity than the "
                              "one that made the cluster; set the ARM_* environment variables instead, which both "
                              "read (servestack:azure.deployerLogin spn or msi)")
    for i, cidr in enumerate(access.api_cidrs):
        # The AKS API server has an IPv4 address only; authorizedIPRanges takes IPv4 ranges.
        if on_azure and ipaddress.ip_network(cidr).version == 6:
            r.problems.append(f"servestack:access.apiCidrs[{i}]: {cidr!r} is an IPv6 range; the AKS API server "
                              "has an IPv4 address only and admits IPv4 ranges")
    if not _AZURE_VM_SIZE.match(system_vm_size):
        r.problem("systemVmSize", f"{system_vm_size!r} is not an Azure VM size such as Standard_D4ds_v5")
    storage_ranges = []
    for i, cidr in enumerate(storage_cidrs):
        network = ipaddress.ip_network(cidr)
        # The storage firewall takes IPv4 ranges up to /30 or single addresses, never RFC 1918 ones.
        if (network.version != 4 or 30 < network.prefixlen < 32 or is_world(cidr)
                or any(network.overlaps(ipaddress.ip_network(r1918)) for r1918 in _RFC1918)):
            r.problem(f"storageCidrs[{i}]", f"{cidr!r} is not allowed; the storage firewall takes public "
                                            "IPv4 ranges from /1 to /30, or single addresses (/32)")
            continue
        storage_ranges.append(str(network.network_address) if network.prefixlen == 32 else cidr)
    return AzureConfig(vnet_cidr=vnet_cidr, system_vm_size=system_vm_size, storage_cidrs=tuple(storage_ranges),
                       deployer_login=deployer_login, deployer_type=deployer_type)


def load_stack_config() -> StackConfig:
    """Read the running stack's config (as the Pulumi engine or the offline plan set it)."""
    from pulumi.runtime import config as runtime_config

    values = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    return parse_config(pulumi.get_stack(), values)
