"""The one cloud-neutral Kubernetes deployment of the serving image, on whatever cluster a Platform offers.

It follows the serving contract of DESIGN.md: the API on port 8000, metrics on their own port (9090, which
no load balancer or gateway route exposes), probes on /health/live and /health/ready, API keys (hashed)
with per-client limits from a Secret the server rereads, the model in MODEL_PATH at one revision, and a
drain on SIGTERM that `terminationGracePeriodSeconds` leaves time for (infra/drain.py). A canary revision
runs as a second Deployment with its own Service; the gateway's route splits requests between them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random
from pulumi_command import local

from infra import commands, drain
from infra.autoscaling import SCALE_DOWN_WINDOW_SECONDS, QueueScaling, keda_released, scaled_object
from infra.config import DEFAULT_IMAGE_REPOSITORY, AccessConfig, GpuConfig, ModelConfig, ServingConfig
from infra.gateway import ENVOY_GATEWAY_NAMESPACE, GATEWAY_NAME, Backend
from infra.monitoring import Scraper
from infra.operators import operator_access
from infra.platform import Platform

PORT = 8000
METRICS_PORT = 9090
# The serving pods' Kubernetes service account: each cloud's workload identity trusts exactly this name.
SERVICE_ACCOUNT = "servestack"
# Where serving/Dockerfile bakes the model, and where the init container puts a fetched one.
BAKED_MODEL_PATH = "/opt/servestack/model"
MODELS_DIR = "/models"
# The model revision a pod serves, on the Deployment and its pods.
REVISION_LABEL = "servestack.io/model-revision"
# The API keys file in its Secret, and where the server finds it.
API_KEYS_FILE = "api-keys.json"
API_KEYS_DIR = "/etc/servestack/api-keys"
# The shared store of the per-client limits (a Redis-protocol server), when more than one pod may serve.
LIMITS_STORE = "servestack-limits"
LIMITS_STORE_IMAGE = "docker.io/valkey/valkey:9.1.0-alpine"
LIMITS_STORE_PORT = 6379
# The valkey image's user, and the alpine flavour's group (gid 999 is taken there).
LIMITS_STORE_USER, LIMITS_STORE_GROUP = 999, 1000
# The version AKS documents for a self-managed plugin (and ships on its managed GPU nodes).
DEVICE_PLUGIN_IMAGE = "nvcr.io/nvidia/k8s-device-plugin:v0.18.0"
RESTRICTED_CONTAINER = k8s.core.v1.SecurityContextArgs(
    run_as_non_root=True,
    read_only_root_filesystem=True,
    allow_privilege_escalation=False,
    capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
    seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
)
# The first rollout may wait for a GPU node to scale up from zero, a large image pull and a model load.
ROLLOUT_MINUTES = 30
# How long the first `up` waits for the operator to push the image or upload the model.
UPLOAD_MINUTES = 30
# The image's non-root user (serving/Dockerfile).
RUN_AS_USER = 10001
# The models serving/Dockerfile bakes by name (MODEL=...); any other is baked from a directory.
BUNDLED_MODELS = ("tiny", "smollm2")


@dataclass(frozen=True)
class ServingArgs:
    serving: ServingConfig
    model: ModelConfig
    gpu: GpuConfig
    access: AccessConfig
    platform: Platform
    # Whether the gateway fronts the servers (their Services are then ClusterIP, reached only by Envoy).
    behind_gateway: bool = False
    # The stack's Prometheus (servestack:monitoring), None without one: nothing then reads the metrics port.
    scraper: Scraper | None = None
    # KEDA and the stack's Prometheus: each track scales on its queue (else on CPU).
    queue_scaling: QueueScaling | None = None


@dataclass(frozen=True)
class Track:
    """One Deployment of the server: the stable one, or the canary beside it, each serving one revision."""

    name: str  # the Deployment's and its Service's name
    component: str  # its pods' app.kubernetes.io/component: the stable selector never matches a canary pod
    revision: str
    min_replicas: int
    max_replicas: int
    weight: int  # its percent of the requests


def tracks(args: ServingArgs) -> list[Track]:
    serving, model = args.serving, args.model
    canary = serving.canary
    stable_revision = canary.revision if canary is not None and canary.weight == 100 else model.revision
    stable = Track("servestack", "server", stable_revision, serving.min_replicas, serving.max_replicas,
                   100 - (canary.weight if serving.canary_pods and canary else 0))
    if not serving.canary_pods or canary is None:
        return [stable]
    return [stable, Track("servestack-canary", "canary", canary.revision, 1, serving.canary_max_replicas,
                          canary.weight)]


class ServingDeployment(pulumi.ComponentResource):
    """Namespace, identity, API keys and their limits store, a Deployment and Service per track (stable,
    canary), autoscaling, disruption budgets, the network policy and on-call's Roles."""

    # The stable and canary Services with their weights, for the gateway's route.
    backends: list[Backend]
    # Their Deployments, rolled out: the route changes only after them.
    deployments: list[k8s.apps.v1.Deployment]
    # Where clients reach the servers when no gateway fronts them (None behind the gateway).
    endpoint: pulumi.Output[str] | None
    # How to reach the endpoint where the Service has no load balancer (a port-forward command), else None.
    connect: pulumi.Output[str] | None
    # Each client's API key (a secret).
    api_keys: pulumi.Output[dict[str, str]] | None
    namespace: pulumi.Output[str]

    def __init__(self, name: str, args: ServingArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("servestack:kubernetes:ServingDeployment", name, None, opts)
        serving, platform = args.serving, args.platform
        child = pulumi.ResourceOptions(parent=self, provider=platform.k8s_provider)
        labels = {"app.kubernetes.io/name": "servestack", "app.kubernetes.io/instance": name}

        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=serving.namespace,
                labels={"pod-security.kubernetes.io/enforce": "restricted",
                        "pod-security.kubernetes.io/enforce-version": "latest"},
            ),
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=list(platform.ready))),
        )
        ns = namespace.metadata.name
        in_ns = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[namespace]))

        service_account = k8s.core.v1.ServiceAccount(
            f"{name}-service-account",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=SERVICE_ACCOUNT, namespace=ns, labels=labels,
                                                annotations=dict(platform.service_account_annotations)),
            automount_service_account_token=False,
            opts=in_ns,
        )
        self.api_keys, keys_secret = _api_keys(name, args, ns, labels, in_ns)
        limits_store = _limits_store(name, args, ns, labels, in_ns) if keys_secret is not None else None
        pod = PodInputs(service_account=service_account, keys_secret=keys_secret, limits_store=limits_store)

        # On the first `up` the stack's registry and bucket are new: wait (bounded) for the operator to
        # upload the image and the model, saying how, instead of letting the rollout time out on them.
        self.deployments, self.backends, services = [], [], []
        for track in tracks(args):
            uploads = _uploads(f"{name}-{track.component}" if track.component != "server" else name, args,
                               track.revision, pulumi.ResourceOptions(parent=self))
            deployment, service = _track(name, args, track, labels, ns, pod, uploads, in_ns)
            self.deployments.append(deployment)
            services.append(service)
            self.backends.append(Backend(service=service.metadata.name, port=serving.port, weight=track.weight))

        _network_policy(name, args, labels, ns, in_ns)
        operator_access(name, ns, dict(platform.access_groups), labels, in_ns)
        if args.scraper is not None:
            _pod_monitor(name, labels, args.scraper, ns, pulumi.ResourceOptions.merge(
                in_ns, pulumi.ResourceOptions(depends_on=[namespace, *args.scraper.ready])))
        if platform.needs_device_plugin and args.gpu.count > 0:
            # Outside the namespace, so it waits for the platform by itself (the deployer's cluster access).
            _device_plugin(name, platform, pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(depends_on=list(platform.ready))))

        self.namespace = ns
        self.endpoint, self.connect = None, None
        stable = services[0]
        if args.behind_gateway:
            pass
        elif platform.service_type == "LoadBalancer":
            self.endpoint = stable.status.apply(lambda status: _endpoint_url(status, serving.port))
        else:
            # No load balancer: the operator forwards a local port to the Service.
            self.endpoint = pulumi.Output.from_input(f"http://127.0.0.1:{PORT}")
            self.connect = pulumi.Output.concat(platform.kubectl, " -n ", ns, " port-forward service/",
                                                stable.metadata.name, f" {PORT}:{serving.port}")
        outputs: dict[str, pulumi.Input[Any]] = {"namespace": ns}
        if self.endpoint is not None:
            outputs["endpoint"] = self.endpoint
        if self.connect is not None:
            outputs["connect"] = self.connect
        if self.api_keys is not None:
            outputs["api_keys"] = self.api_keys
        self.register_outputs(outputs)


@dataclass(frozen=True)
class PodInputs:
    """What every serving pod refers to, whatever its track."""

    service_account: k8s.core.v1.ServiceAccount
    keys_secret: k8s.core.v1.Secret | None
    limits_store: k8s.core.v1.Secret | None  # holds the limits store's URL with its password


def _track(name: str, args: ServingArgs, track: Track, labels: dict[str, str], ns: pulumi.Input[str],
           pod: PodInputs, uploads: list[pulumi.Resource], in_ns: pulumi.ResourceOptions,
           ) -> tuple[k8s.apps.v1.Deployment, k8s.core.v1.Service]:
    """One track's Deployment, Service, autoscaler and disruption budget."""
    suffix = "" if track.component == "server" else f"-{track.component}"
    selector = {**labels, "app.kubernetes.io/component": track.component}
    # Pulumi waits for the rollout (ROLLOUT_MINUTES); the Service waits for ready endpoints too.
    rollout = f"{ROLLOUT_MINUTES}m"
    first_rollout = pulumi.ResourceOptions.merge(in_ns, pulumi.ResourceOptions(
        custom_timeouts=pulumi.CustomTimeouts(create=rollout, update=rollout)))
    deployment = k8s.apps.v1.Deployment(
        f"{name}-deployment{suffix}",
        metadata=k8s.meta.v1.ObjectMetaArgs(name=track.name, namespace=ns,
                                            labels={**selector, REVISION_LABEL: track.revision}),
        spec=k8s.apps.v1.DeploymentSpecArgs(
            replicas=track.min_replicas,
            # Kubernetes' own deadline (10 minutes by default) would report the rollout as failed
            # (ProgressDeadlineExceeded) long before Pulumi stops waiting.
            progress_deadline_seconds=ROLLOUT_MINUTES * 60,
            selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector),
            # Never below the available replicas: a new pod must be ready before an old one goes.
            strategy=k8s.apps.v1.DeploymentStrategyArgs(
                type="RollingUpdate",
                rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(max_unavailable=0, max_surge=1),
            ),
            template=_pod_template(args, track, selector, pod),
        ),
        # The autoscaler owns the replica count after creation.
        opts=pulumi.ResourceOptions.merge(first_rollout, pulumi.ResourceOptions(
            ignore_changes=["spec.replicas"], depends_on=uploads)),
    )
    service = _service(f"{name}-service{suffix}", track.name, args, selector, ns, first_rollout)
    _autoscaler(f"{name}-autoscaler{suffix}", track, args, deployment, ns, selector, in_ns)
    k8s.policy.v1.PodDisruptionBudget(
        f"{name}-disruption-budget{suffix}",
        metadata=k8s.meta.v1.ObjectMetaArgs(name=track.name, namespace=ns, labels=selector),
        # maxUnavailable rather than minAvailable: a single replica must not block node drains.
        spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
            max_unavailable=1, selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector)),
        opts=in_ns,
    )
    return deployment, service


def _api_keys(name: str, args: ServingArgs, ns: pulumi.Input[str], labels: dict[str, str],
              opts: pulumi.ResourceOptions) -> tuple[pulumi.Output[dict[str, str]] | None, k8s.core.v1.Secret | None]:
    """A random key per client (a new one for each `rotation`), and the Secret the servers read: each client's
    id, the key's SHA-256 (the pods never hold a key) and its limits. The servers reread the file when the
    kubelet updates it (within a minute or two), so a rotation needs no restart."""
    serving = args.serving
    if not serving.auth:
        return None, None
    keys: dict[str, pulumi.Output[str]] = {}
    for client in serving.api_keys:
        password = random.RandomPassword(f"{name}-api-key-{client.client}", length=48, special=False,
                                         keepers={"rotation": str(client.rotation)},
                                         opts=pulumi.ResourceOptions(parent=opts.parent))
        keys[client.client] = pulumi.Output.secret(password.result)

    def document(values: dict[str, str]) -> str:
        return json.dumps({"clients": [
            {"client": c.client, "sha256": hashlib.sha256(values[c.client].encode()).hexdigest(),
             "requestsPerMinute": c.requests_per_minute, "tokensPerMinute": c.tokens_per_minute}
            for c in serving.api_keys]}, indent=2) + "\n"

    all_keys = pulumi.Output.all(**keys)
    text: pulumi.Output[str] = pulumi.Output.secret(all_keys.apply(document))
    secret = k8s.core.v1.Secret(
        f"{name}-api-keys",
        metadata=k8s.meta.v1.ObjectMetaArgs(name="servestack-api-keys", namespace=ns, labels=labels),
        type="Opaque",
        string_data={API_KEYS_FILE: text},
        opts=opts,
    )
    return pulumi.Output.secret(all_keys), secret


def _limits_store(name: str, args: ServingArgs, ns: pulumi.Input[str], labels: dict[str, str],
                  opts: pulumi.ResourceOptions) -> k8s.core.v1.Secret | None:
    """Where the servers count each client's requests and tokens per minute, so that a limit holds across
    replicas: a Valkey (Redis protocol) server on the system nodes, password-protected, without persistence
    (the counters live a minute), reachable from the serving pods only. None while one pod serves alone: it
    counts in memory."""
    serving, platform = args.serving, args.platform
    if serving.max_replicas == 1 and not serving.canary_pods:
        return None
    store_labels = {**labels, "app.kubernetes.io/component": "limits-store"}
    password = random.RandomPassword(f"{name}-limits-store-password", length=40, special=False,
                                     opts=pulumi.ResourceOptions(parent=opts.parent))
    secret_password: pulumi.Output[str] = pulumi.Output.secret(password.result)
    url: pulumi.Output[str] = pulumi.Output.secret(pulumi.Output.concat(
        "redis://:", password.result, f"@{LIMITS_STORE}:{LIMITS_STORE_PORT}/0"))
    secret = k8s.core.v1.Secret(
        f"{name}-limits-store",
        metadata=k8s.meta.v1.ObjectMetaArgs(name=LIMITS_STORE, namespace=ns, labels=store_labels),
        type="Opaque",
        string_data={"password": secret_password, "url": url},
        opts=opts,
    )
    k8s.apps.v1.Deployment(
        f"{name}-limits-store",
        metadata=k8s.meta.v1.ObjectMetaArgs(name=LIMITS_STORE, namespace=ns, labels=store_labels),
        spec=k8s.apps.v1.DeploymentSpecArgs(
            replicas=1,
            selector=k8s.meta.v1.LabelSelectorArgs(match_labels=store_labels),
            # One store at a time: two would count apart.
            strategy=k8s.apps.v1.DeploymentStrategyArgs(type="Recreate"),
            template=k8s.core.v1.PodTemplateSpecArgs(
                metadata=k8s.meta.v1.ObjectMetaArgs(labels=store_labels),
                spec=k8s.core.v1.PodSpecArgs(
                    automount_service_account_token=False,
                    enable_service_links=False,
                    node_selector=dict(platform.system_node_selector) or None,
                    tolerations=[t.to_args() for t in platform.system_tolerations] or None,
                    security_context=k8s.core.v1.PodSecurityContextArgs(
                        run_as_non_root=True, run_as_user=LIMITS_STORE_USER, run_as_group=LIMITS_STORE_GROUP,
                        fs_group=LIMITS_STORE_GROUP,
                        seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault")),
                    containers=[k8s.core.v1.ContainerArgs(
                        name="valkey",
                        image=LIMITS_STORE_IMAGE,
                        args=["valkey-server", "--save", "", "--appendonly", "no", "--maxmemory", "96mb",
                              "--maxmemory-policy", "volatile-ttl", "--requirepass", "$(LIMITS_STORE_PASSWORD)"],
                        env=[k8s.core.v1.EnvVarArgs(
                            name="LIMITS_STORE_PASSWORD",
                            value_from=k8s.core.v1.EnvVarSourceArgs(secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(
                                name=secret.metadata.name, key="password")))],
                        ports=[k8s.core.v1.ContainerPortArgs(name="redis", container_port=LIMITS_STORE_PORT)],
                        resources=k8s.core.v1.ResourceRequirementsArgs(
                            requests={"cpu": "50m", "memory": "128Mi"}, limits={"memory": "128Mi"}),
                        readiness_probe=k8s.core.v1.ProbeArgs(
                            tcp_socket=k8s.core.v1.TCPSocketActionArgs(port="redis"), period_seconds=5),
                        liveness_probe=k8s.core.v1.ProbeArgs(
                            tcp_socket=k8s.core.v1.TCPSocketActionArgs(port="redis"), period_seconds=10,
                            failure_threshold=6),
                        security_context=RESTRICTED_CONTAINER,
                        volume_mounts=[k8s.core.v1.VolumeMountArgs(name="data", mount_path="/data")],
                    )],
                    volumes=[k8s.core.v1.VolumeArgs(name="data", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(
                        size_limit="64Mi"))],
                ),
            ),
        ),
        opts=opts,
    )
    k8s.core.v1.Service(
        f"{name}-limits-store-service",
        metadata=k8s.meta.v1.ObjectMetaArgs(name=LIMITS_STORE, namespace=ns, labels=store_labels),
        spec=k8s.core.v1.ServiceSpecArgs(
            type="ClusterIP", selector=store_labels,
            ports=[k8s.core.v1.ServicePortArgs(name="redis", port=LIMITS_STORE_PORT, target_port="redis")]),
        opts=opts,
    )
    server_pods = k8s.meta.v1.LabelSelectorArgs(
        match_expressions=[k8s.meta.v1.LabelSelectorRequirementArgs(
            key="app.kubernetes.io/component", operator="In", values=["server", "canary"])],
        match_labels=labels)
    k8s.networking.v1.NetworkPolicy(
        f"{name}-limits-store-network-policy",
        metadata=k8s.meta.v1.ObjectMetaArgs(name=LIMITS_STORE, namespace=ns, labels=store_labels),
        spec=k8s.networking.v1.NetworkPolicySpecArgs(
            pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=store_labels),
            policy_types=["Ingress"],
            ingress=[k8s.networking.v1.NetworkPolicyIngressRuleArgs(
                ports=[k8s.networking.v1.NetworkPolicyPortArgs(port=LIMITS_STORE_PORT, protocol="TCP")],
                from_=[k8s.networking.v1.NetworkPolicyPeerArgs(pod_selector=server_pods)])],
        ),
        opts=opts,
    )
    return secret


def _uploads(name: str, args: ServingArgs, revision: str, opts: pulumi.ResourceOptions) -> list[pulumi.Resource]:
    """Bounded waits for the image and the model the operator uploads into the stack's own stores."""
    serving, model, platform = args.serving, args.model, args.platform
    wanted = []
    if serving.image is None and platform.image_upload is not None:
        wanted.append(("image", platform.image_upload(serving.image_tag, bake_arguments(model, revision))))
    if model.source == "bucket" and platform.model_upload is not None:
        wanted.append(("model", platform.model_upload(model.name, revision)))
    waits: list[pulumi.Resource] = []
    for suffix, upload in wanted:
        def script(values: list[str], what: str = upload.what, setup: str = upload.setup) -> str:
            check, *steps = values
            return commands.uploaded(check, what, steps, timeout_seconds=UPLOAD_MINUTES * 60, setup=setup)

        waits.append(local.Command(f"{name}-wait-for-{suffix}",
                                   create=pulumi.Output.all(upload.check, *upload.steps).apply(script), opts=opts))
    return waits


def bake_arguments(model: ModelConfig, revision: str) -> str:
    """The `docker build` arguments (each followed by a space) that bake the stack's model at its revision into
    the image, where the image carries it (serving/Dockerfile); nothing where the pods fetch it."""
    if model.source != "image":
        return ""
    which = f"MODEL={model.name} " if model.name in BUNDLED_MODELS else (
        f"MODEL=dir --build-arg MODEL_NAME={model.name} --build-context model=./MODEL_DIR ")
    return f"--build-arg {which}--build-arg MODEL_REVISION={revision} "


def _image(serving: ServingConfig, platform: Platform) -> pulumi.Input[str]:
    if serving.image is not None:
        return serving.image
    if platform.registry_url is None:
        raise ValueError("servestack:serving.image: missing, and this platform has no registry to take "
                         "the image from; name the image")
    return pulumi.Output.concat(platform.registry_url, f"/{DEFAULT_IMAGE_REPOSITORY}:{serving.image_tag}")


def _model_source(model: ModelConfig, revision: str, platform: Platform) -> pulumi.Input[str] | None:
    """Where the init container fetches the model from; None when the image carries it."""
    if model.source == "image":
        return None
    if model.source == "bucket":
        if platform.model_bucket_uri is None:
            raise ValueError("servestack:model.source: 'bucket' but this platform has no model bucket; "
                             "use image or a URI")
        return pulumi.Output.concat(platform.model_bucket_uri, f"/models/{model.name}/{revision}")
    # A URI names the revisions' parent, as the bucket's models/<name> does.
    return f"{model.source.rstrip('/')}/{revision}"


def _secret_env(name: str, secret: k8s.core.v1.Secret, key: str) -> k8s.core.v1.EnvVarArgs:
    return k8s.core.v1.EnvVarArgs(name=name, value_from=k8s.core.v1.EnvVarSourceArgs(
        secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(name=secret.metadata.name, key=key)))


def _pod_template(args: ServingArgs, track: Track, labels: dict[str, str],
                  pod: PodInputs) -> k8s.core.v1.PodTemplateSpecArgs:
    serving, model, gpu, platform = args.serving, args.model, args.gpu, args.platform
    image = _image(serving, platform)
    source = _model_source(model, track.revision, platform)
    model_path = BAKED_MODEL_PATH if source is None else f"{MODELS_DIR}/{model.name}"

    env = [
        k8s.core.v1.EnvVarArgs(name="MODEL_PATH", value=model_path),
        k8s.core.v1.EnvVarArgs(name="SERVESTACK_MODEL_NAME", value=model.name),
        # The server refuses a model whose manifest names another revision; a new revision rolls out.
        k8s.core.v1.EnvVarArgs(name="SERVESTACK_MODEL_REVISION", value=track.revision),
        k8s.core.v1.EnvVarArgs(name="SERVESTACK_HOST", value="0.0.0.0"),
        k8s.core.v1.EnvVarArgs(name="SERVESTACK_PORT", value=str(PORT)),
        k8s.core.v1.EnvVarArgs(name="SERVESTACK_METRICS_PORT", value=str(METRICS_PORT)),
        k8s.core.v1.EnvVarArgs(name="SERVESTACK_DRAIN_SECONDS", value=str(serving.drain_seconds)),
        k8s.core.v1.EnvVarArgs(name="SERVESTACK_MAX_BATCH_SIZE", value=str(serving.max_batch_size)),
        k8s.core.v1.EnvVarArgs(name="HF_HOME", value="/tmp/hf"),
        k8s.core.v1.EnvVarArgs(name="HF_HUB_OFFLINE", value="1"),
    ]
    limits = {"memory": serving.memory}
    if gpu.count > 0:
        limits["nvidia.com/gpu"] = str(gpu.count)
        # On a GPU node, no usable CUDA stops the server at start instead of serving on the CPU.
        env.append(k8s.core.v1.EnvVarArgs(name="SERVESTACK_REQUIRE_CUDA", value="1"))
    volumes = [
        k8s.core.v1.VolumeArgs(name="tmp", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(size_limit="4Gi")),
        # PyTorch shares tensors between processes through /dev/shm; the default 64Mi is too small.
        k8s.core.v1.VolumeArgs(name="dshm", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(
            medium="Memory", size_limit="1Gi")),
    ]
    mounts = [k8s.core.v1.VolumeMountArgs(name="tmp", mount_path="/tmp"),
              k8s.core.v1.VolumeMountArgs(name="dshm", mount_path="/dev/shm")]
    if pod.keys_secret is not None:
        # Mounted as a volume (not an environment variable, not subPath) so that a rotation reaches the
        # running server.
        env.append(k8s.core.v1.EnvVarArgs(name="SERVESTACK_API_KEYS_FILE", value=f"{API_KEYS_DIR}/{API_KEYS_FILE}"))
        volumes.append(k8s.core.v1.VolumeArgs(name="api-keys", secret=k8s.core.v1.SecretVolumeSourceArgs(
            secret_name=pod.keys_secret.metadata.name, default_mode=0o440)))
        mounts.append(k8s.core.v1.VolumeMountArgs(name="api-keys", mount_path=API_KEYS_DIR, read_only=True))
    if pod.limits_store is not None:
        env.append(_secret_env("SERVESTACK_LIMITS_STORE_URL", pod.limits_store, "url"))
    init_containers = []
    if source is not None:
        volumes.append(k8s.core.v1.VolumeArgs(name="model", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(
            size_limit=f"{model.disk_gb}Gi")))
        mounts.append(k8s.core.v1.VolumeMountArgs(name="model", mount_path=MODELS_DIR, read_only=True))
        init_containers.append(k8s.core.v1.ContainerArgs(
            name="fetch-model",
            image=image,
            # The fetch verifies every file against the revision's manifest, and the manifest's name and
            # revision against these.
            command=["python", "-m", "serving.fetch", source, model_path,
                     "--name", model.name, "--revision", track.revision],
            env=[k8s.core.v1.EnvVarArgs(name="HOME", value="/tmp")],
            resources=k8s.core.v1.ResourceRequirementsArgs(requests={"cpu": "500m", "memory": "1Gi"},
                                                           limits={"memory": "2Gi"}),
            security_context=RESTRICTED_CONTAINER,
            volume_mounts=[k8s.core.v1.VolumeMountArgs(name="model", mount_path=MODELS_DIR),
                           k8s.core.v1.VolumeMountArgs(name="tmp", mount_path="/tmp")],
        ))

    def probe(path: str, period: int, timeout: int, failures: int) -> k8s.core.v1.ProbeArgs:
        return k8s.core.v1.ProbeArgs(http_get=k8s.core.v1.HTTPGetActionArgs(path=path, port="http"),
                                     period_seconds=period, timeout_seconds=timeout,
                                     failure_threshold=failures)

    pre_stop = drain.pre_stop_seconds(platform.cloud, args.behind_gateway)
    server = k8s.core.v1.ContainerArgs(
        name="server",
        image=image,
        ports=[k8s.core.v1.ContainerPortArgs(name="http", container_port=PORT, protocol="TCP"),
               k8s.core.v1.ContainerPortArgs(name="metrics", container_port=METRICS_PORT, protocol="TCP")],
        env=env,
        resources=k8s.core.v1.ResourceRequirementsArgs(
            # No CPU limit: throttling a latency-bound server costs more than it protects.
            requests={"cpu": serving.cpu, "memory": serving.memory}, limits=limits),
        # Loading a model takes minutes: the startup probe allows 15 of them before liveness counts.
        startup_probe=probe("/health/ready", period=10, timeout=5, failures=90),
        readiness_probe=probe("/health/ready", period=5, timeout=3, failures=3),
        liveness_probe=probe("/health/live", period=10, timeout=5, failures=6),
        # The server keeps admitting during this pause, while whatever sends it requests learns it is going.
        lifecycle=k8s.core.v1.LifecycleArgs(
            pre_stop=k8s.core.v1.LifecycleHandlerArgs(sleep=k8s.core.v1.SleepActionArgs(seconds=pre_stop))),
        security_context=RESTRICTED_CONTAINER,
        volume_mounts=mounts,
    )
    return k8s.core.v1.PodTemplateSpecArgs(
        metadata=k8s.meta.v1.ObjectMetaArgs(labels={**labels, REVISION_LABEL: track.revision, **platform.pod_labels}),
        spec=k8s.core.v1.PodSpecArgs(
            service_account_name=pod.service_account.metadata.name,
            automount_service_account_token=False,
            # No Docker-link variables for the namespace's Services: the Service "servestack" would put
            # SERVESTACK_PORT=tcp://IP:PORT and other SERVESTACK_* names into the server's settings prefix.
            enable_service_links=False,
            security_context=k8s.core.v1.PodSecurityContextArgs(
                run_as_non_root=True, run_as_user=RUN_AS_USER, run_as_group=RUN_AS_USER, fs_group=RUN_AS_USER,
                seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault")),
            # preStop pause, then the server's drain, then its shutdown.
            termination_grace_period_seconds=drain.grace_seconds(platform.cloud, args.behind_gateway,
                                                                 serving.drain_seconds),
            node_selector=dict(platform.gpu_node_selector) if gpu.count > 0 else None,
            tolerations=[t.to_args() for t in platform.gpu_tolerations] if gpu.count > 0 else None,
            topology_spread_constraints=[k8s.core.v1.TopologySpreadConstraintArgs(
                max_skew=1, topology_key="topology.kubernetes.io/zone", when_unsatisfiable="ScheduleAnyway",
                label_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=labels))],
            init_containers=init_containers or None,
            containers=[server],
            volumes=volumes,
        ),
    )


def _service(resource_name: str, service_name: str, args: ServingArgs, selector: dict[str, str],
             ns: pulumi.Input[str], opts: pulumi.ResourceOptions) -> k8s.core.v1.Service:
    """The API port only (metrics are scraped from the pods): ClusterIP behind the gateway, else the
    platform's load balancer, restricted to the allowed clients."""
    serving, access, platform = args.serving, args.access, args.platform
    balanced = platform.service_type == "LoadBalancer" and not args.behind_gateway
    annotations: dict[str, pulumi.Input[str]] = {}
    if balanced:
        annotations.update(platform.load_balancer_annotations)
        if access.internal_load_balancer:
            annotations.update(platform.internal_load_balancer_annotations)
        annotations.update(platform.drain_annotations(
            drain.grace_seconds(platform.cloud, False, serving.drain_seconds)))
    return k8s.core.v1.Service(
        resource_name,
        metadata=k8s.meta.v1.ObjectMetaArgs(name=service_name, namespace=ns, labels=selector,
                                            annotations=annotations or None),
        spec=k8s.core.v1.ServiceSpecArgs(
            type="LoadBalancer" if balanced else "ClusterIP",
            selector=selector,
            ports=[k8s.core.v1.ServicePortArgs(name="http", port=serving.port, target_port="http",
                                               protocol="TCP")],
            load_balancer_source_ranges=(list(access.endpoint_cidrs) or None) if balanced else None,
            # Keep the client's address, so that source ranges and the network policy see it.
            external_traffic_policy="Local" if balanced else None,
        ),
        opts=opts,
    )


def _autoscaler(resource_name: str, track: Track, args: ServingArgs, deployment: k8s.apps.v1.Deployment,
                ns: pulumi.Input[str], labels: dict[str, str], opts: pulumi.ResourceOptions) -> None:
    """KEDA on the track's queue where Prometheus runs (infra/autoscaling.py), else an HPA on CPU."""
    serving = args.serving
    if args.queue_scaling is not None:
        scaled_object(resource_name, ns, serving.namespace, track.name, track.min_replicas, track.max_replicas,
                      serving.max_batch_size, labels, args.queue_scaling,
                      pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[deployment])))
        return
    # Turning monitoring off: KEDA's HPA, of the same name, must be gone first (infra/autoscaling.py).
    released = keda_released(f"{resource_name}-keda-released", args.platform, serving.namespace, track.name, opts)
    # CPU alone: a Pods metric would need an adapter serving the custom metrics API, and an HPA missing one
    # of its metrics never scales down.
    k8s.autoscaling.v2.HorizontalPodAutoscaler(
        resource_name,
        metadata=k8s.meta.v1.ObjectMetaArgs(
            name=track.name, namespace=ns, labels=labels,
            # Kubernetes deletes it with its Deployment: Pulumi only forgets it (retain_on_delete below).
            owner_references=[k8s.meta.v1.OwnerReferenceArgs(
                api_version="apps/v1", kind="Deployment", name=deployment.metadata.name,
                uid=deployment.metadata.uid)]),
        spec=k8s.autoscaling.v2.HorizontalPodAutoscalerSpecArgs(
            scale_target_ref=k8s.autoscaling.v2.CrossVersionObjectReferenceArgs(
                api_version="apps/v1", kind="Deployment", name=deployment.metadata.name),
            min_replicas=track.min_replicas,
            max_replicas=track.max_replicas,
            metrics=[k8s.autoscaling.v2.MetricSpecArgs(
                type="Resource",
                resource=k8s.autoscaling.v2.ResourceMetricSourceArgs(
                    name="cpu",
                    target=k8s.autoscaling.v2.MetricTargetArgs(type="Utilization", average_utilization=70)),
            )],
            # GPU nodes take minutes to arrive; do not give them back at the first quiet minute.
            behavior=k8s.autoscaling.v2.HorizontalPodAutoscalerBehaviorArgs(
                scale_down=k8s.autoscaling.v2.HPAScalingRulesArgs(
                    stabilization_window_seconds=SCALE_DOWN_WINDOW_SECONDS)),
        ),
        # Turning monitoring on, KEDA takes this HPA over under its name: deleting it would delete KEDA's.
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[released],
                                                                       retain_on_delete=True)),
    )


def _network_policy(name: str, args: ServingArgs, labels: dict[str, str], ns: pulumi.Input[str],
                    opts: pulumi.ResourceOptions) -> None:
    """The API port from the gateway's Envoy pods (or, without a gateway, from the allowed clients); the
    metrics port from the stack's Prometheus pods only (none without one); nothing else."""
    access, platform = args.access, args.platform
    api = [k8s.networking.v1.NetworkPolicyPortArgs(port=PORT, protocol="TCP")]
    if args.behind_gateway:
        api_clients = [k8s.networking.v1.NetworkPolicyPeerArgs(
            namespace_selector=k8s.meta.v1.LabelSelectorArgs(
                match_labels={"kubernetes.io/metadata.name": ENVOY_GATEWAY_NAMESPACE}),
            pod_selector=k8s.meta.v1.LabelSelectorArgs(
                match_labels={"app.kubernetes.io/component": "proxy",
                              "gateway.envoyproxy.io/owning-gateway-name": GATEWAY_NAME}))]
    else:
        clients = list(access.endpoint_cidrs) or list(platform.internal_cidrs)
        if not clients:
            # The policy would admit no client at all: an endpoint that nobody can reach.
            raise ValueError("servestack:access.endpointCidrs: empty, and the internal load balancer's clients "
                             f"are unknown on the {platform.cloud} platform; list them in endpointCidrs")
        api_clients = [k8s.networking.v1.NetworkPolicyPeerArgs(ip_block=k8s.networking.v1.IPBlockArgs(cidr=c))
                       for c in clients]
    rules = [k8s.networking.v1.NetworkPolicyIngressRuleArgs(ports=api, from_=api_clients)]
    if args.scraper is not None:
        # Namespace and pod labels in one peer: these pods in that namespace, not any pod there.
        rules.append(k8s.networking.v1.NetworkPolicyIngressRuleArgs(
            ports=[k8s.networking.v1.NetworkPolicyPortArgs(port=METRICS_PORT, protocol="TCP")],
            from_=[k8s.networking.v1.NetworkPolicyPeerArgs(
                namespace_selector=k8s.meta.v1.LabelSelectorArgs(
                    match_labels={"kubernetes.io/metadata.name": args.scraper.namespace}),
                pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=args.scraper.pod_labels))]))
    k8s.networking.v1.NetworkPolicy(
        f"{name}-network-policy",
        metadata=k8s.meta.v1.ObjectMetaArgs(name="servestack", namespace=ns, labels=labels),
        spec=k8s.networking.v1.NetworkPolicySpecArgs(
            pod_selector=k8s.meta.v1.LabelSelectorArgs(
                match_labels=labels,
                match_expressions=[k8s.meta.v1.LabelSelectorRequirementArgs(
                    key="app.kubernetes.io/component", operator="In", values=["server", "canary"])]),
            policy_types=["Ingress"],
            ingress=rules,
        ),
        opts=opts,
    )


def _pod_monitor(name: str, labels: dict[str, str], scraper: Scraper, ns: pulumi.Input[str],
                 opts: pulumi.ResourceOptions) -> None:
    """The stack's Prometheus scrapes the metrics port of every serving pod, stable and canary."""
    k8s.apiextensions.CustomResource(
        f"{name}-pod-monitor",
        api_version="monitoring.coreos.com/v1",
        kind="PodMonitor",
        # The labels the stack's Prometheus selects PodMonitors by.
        metadata=k8s.meta.v1.ObjectMetaArgs(name="servestack", namespace=ns,
                                            labels={**labels, **scraper.monitor_labels}),
        spec={"selector": {"matchLabels": labels,
                           "matchExpressions": [{"key": "app.kubernetes.io/component", "operator": "In",
                                                 "values": ["server", "canary"]}]},
              "podMetricsEndpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s"}]},
        opts=opts,
    )


def _device_plugin(name: str, platform: Platform, opts: pulumi.ResourceOptions) -> None:
    """The NVIDIA device plugin, for clusters whose GPU nodes do not advertise nvidia.com/gpu by themselves."""
    labels = {"app.kubernetes.io/name": "nvidia-device-plugin", "app.kubernetes.io/instance": name}
    k8s.apps.v1.DaemonSet(
        f"{name}-nvidia-device-plugin",
        metadata=k8s.meta.v1.ObjectMetaArgs(name="nvidia-device-plugin", namespace="kube-system", labels=labels),
        spec=k8s.apps.v1.DaemonSetSpecArgs(
            selector=k8s.meta.v1.LabelSelectorArgs(match_labels=labels),
            update_strategy=k8s.apps.v1.DaemonSetUpdateStrategyArgs(type="RollingUpdate"),
            template=k8s.core.v1.PodTemplateSpecArgs(
                metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels),
                spec=k8s.core.v1.PodSpecArgs(
                    priority_class_name="system-node-critical",
                    node_selector=dict(platform.gpu_node_selector),
                    tolerations=[t.to_args() for t in platform.gpu_tolerations],
                    automount_service_account_token=False,
                    containers=[k8s.core.v1.ContainerArgs(
                        name="nvidia-device-plugin",
                        image=DEVICE_PLUGIN_IMAGE,
                        env=[k8s.core.v1.EnvVarArgs(name="FAIL_ON_INIT_ERROR", value="false")],
                        resources=k8s.core.v1.ResourceRequirementsArgs(
                            requests={"cpu": "50m", "memory": "64Mi"}, limits={"memory": "256Mi"}),
                        # The plugin writes its socket into the kubelet's directory as root, but needs
                        # no privilege beyond that.
                        security_context=k8s.core.v1.SecurityContextArgs(
                            allow_privilege_escalation=False,
                            read_only_root_filesystem=True,
                            capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
                            seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault")),
                        volume_mounts=[k8s.core.v1.VolumeMountArgs(
                            name="device-plugin", mount_path="/var/lib/kubelet/device-plugins")],
                    )],
                    volumes=[k8s.core.v1.VolumeArgs(
                        name="device-plugin",
                        host_path=k8s.core.v1.HostPathVolumeSourceArgs(
                            path="/var/lib/kubelet/device-plugins", type="Directory"))],
                ),
            ),
        ),
        opts=opts,
    )


def _endpoint_url(status: k8s.core.v1.outputs.ServiceStatus | None, port: int) -> str:
    """The load balancer's address, once the cloud has given one (empty until then)."""
    ingress = status.load_balancer.ingress if status and status.load_balancer else None
    if not ingress:
        return ""
    host = ingress[0].ip or ingress[0].hostname or ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return f"http://{host}" if port == 80 else f"http://{host}:{port}"
