"""The one cloud-neutral Kubernetes deployment of the serving image, on whatever cluster a Platform offers.

It follows the serving contract of DESIGN.md: port 8000, probes on /health/live and /health/ready,
metrics on /metrics, the API key from a Secret, the model in MODEL_PATH, and a drain on SIGTERM that
`terminationGracePeriodSeconds` leaves time for.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random
from pulumi_command import local

from infra import commands
from infra.config import DEFAULT_IMAGE_REPOSITORY, AccessConfig, GpuConfig, ModelConfig, ServingConfig
from infra.platform import Platform

PORT = 8000
# The serving pods' Kubernetes service account: each cloud's workload identity trusts exactly this name.
SERVICE_ACCOUNT = "servestack"
# Where serving/Dockerfile bakes the model, and where the init container puts a fetched one.
BAKED_MODEL_PATH = "/opt/servestack/model"
MODELS_DIR = "/models"
# With externalTrafficPolicy Local the cloud's load balancer keeps sending new connections to a node until
# its health checks on the node's healthCheckNodePort fail, which takes interval x unhealthy threshold:
# Azure 5 s x 2, AWS NLB 10 s x 2 (the load balancer controller's defaults for Local), GKE 3 s x 2. The
# server keeps admitting during this pause, so that none of them lands on a draining server (503).
PRE_STOP_SECONDS = 30
# After the drain the server still shuts down: uvicorn's graceful shutdown (up to 5 s, serving/__main__.py),
# then the engine's stop. Time for both, before the kubelet's SIGKILL.
SHUTDOWN_SECONDS = 10
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


@dataclass(frozen=True)
class ServingArgs:
    serving: ServingConfig
    model: ModelConfig
    gpu: GpuConfig
    access: AccessConfig
    platform: Platform


class ServingDeployment(pulumi.ComponentResource):
    """Namespace, identity, API key, Deployment, Service, autoscaling, disruption budget and network policy."""

    endpoint: pulumi.Output[str]
    # How to reach the endpoint where the Service has no load balancer (a port-forward command), else None.
    connect: pulumi.Output[str] | None
    api_key: pulumi.Output[str] | None
    namespace: pulumi.Output[str]

    def __init__(self, name: str, args: ServingArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("servestack:kubernetes:ServingDeployment", name, None, opts)
        serving, platform = args.serving, args.platform
        child = pulumi.ResourceOptions(parent=self, provider=platform.k8s_provider)
        labels = {"app.kubernetes.io/name": "servestack", "app.kubernetes.io/instance": name,
                  "app.kubernetes.io/component": "server"}

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

        self.api_key = None
        api_key_secret = None
        if serving.api_key:
            password = random.RandomPassword(f"{name}-api-key", length=48, special=False,
                                             opts=pulumi.ResourceOptions(parent=self))
            self.api_key = pulumi.Output.secret(password.result)
            api_key_secret = k8s.core.v1.Secret(
                f"{name}-api-key",
                metadata=k8s.meta.v1.ObjectMetaArgs(name="servestack-api-key", namespace=ns, labels=labels),
                type="Opaque",
                string_data={"api-key": self.api_key},
                opts=in_ns,
            )

        # On the first `up` the stack's registry and bucket are new: wait (bounded) for the operator to
        # upload the image and the model, saying how, instead of letting the rollout time out on them.
        uploads = _uploads(name, args, pulumi.ResourceOptions(parent=self))
        # Pulumi waits for the rollout (ROLLOUT_MINUTES); the Service waits for ready endpoints too.
        rollout = f"{ROLLOUT_MINUTES}m"
        first_rollout = pulumi.ResourceOptions.merge(in_ns, pulumi.ResourceOptions(
            custom_timeouts=pulumi.CustomTimeouts(create=rollout, update=rollout)))
        deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="servestack", namespace=ns, labels=labels),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=serving.min_replicas,
                # Kubernetes' own deadline (10 minutes by default) would report the rollout as failed
                # (ProgressDeadlineExceeded) long before Pulumi stops waiting.
                progress_deadline_seconds=ROLLOUT_MINUTES * 60,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=labels),
                # Never below the available replicas: a new pod must be ready before an old one goes.
                strategy=k8s.apps.v1.DeploymentStrategyArgs(
                    type="RollingUpdate",
                    rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(max_unavailable=0, max_surge=1),
                ),
                template=_pod_template(name, args, labels, service_account, api_key_secret),
            ),
            # The autoscaler owns the replica count after creation.
            opts=pulumi.ResourceOptions.merge(first_rollout, pulumi.ResourceOptions(
                ignore_changes=["spec.replicas"], depends_on=uploads)),
        )

        service = _service(name, args, labels, ns, first_rollout)
        _autoscaler(name, args, deployment, ns, labels, in_ns)
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-disruption-budget",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="servestack", namespace=ns, labels=labels),
            # maxUnavailable rather than minAvailable: a single replica must not block node drains.
            spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
                max_unavailable=1, selector=k8s.meta.v1.LabelSelectorArgs(match_labels=labels)),
            opts=in_ns,
        )
        _network_policy(name, args, labels, ns, in_ns)
        if serving.prometheus_operator:
            _service_monitor(name, labels, ns, in_ns)
        if platform.needs_device_plugin and args.gpu.count > 0:
            # Outside the namespace, so it waits for the platform by itself (the deployer's cluster access).
            _device_plugin(name, platform, pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(depends_on=list(platform.ready))))

        self.namespace = ns
        self.connect = None
        if platform.service_type == "LoadBalancer":
            self.endpoint = service.status.apply(lambda status: _endpoint_url(status, serving.port))
        else:
            # No load balancer: the operator forwards a local port to the Service.
            self.endpoint = pulumi.Output.from_input(f"http://127.0.0.1:{PORT}")
            self.connect = pulumi.Output.concat(platform.kubectl, " -n ", ns, " port-forward service/",
                                                service.metadata.name, f" {PORT}:{serving.port}")
        outputs: dict[str, pulumi.Input[str]] = {"endpoint": self.endpoint, "namespace": ns}
        if self.connect is not None:
            outputs["connect"] = self.connect
        if self.api_key is not None:
            outputs["api_key"] = self.api_key
        self.register_outputs(outputs)


def _uploads(name: str, args: ServingArgs, opts: pulumi.ResourceOptions) -> list[pulumi.Resource]:
    """Bounded waits for the image and the model the operator uploads into the stack's own stores."""
    serving, model, platform = args.serving, args.model, args.platform
    wanted = []
    if serving.image is None and platform.image_upload is not None:
        wanted.append(("image", platform.image_upload(serving.image_tag)))
    if model.source == "bucket" and platform.model_upload is not None:
        wanted.append(("model", platform.model_upload(model.name)))
    waits: list[pulumi.Resource] = []
    for suffix, upload in wanted:
        def script(values: list[str], what: str = upload.what, setup: str = upload.setup) -> str:
            check, *steps = values
            return commands.uploaded(check, what, steps, timeout_seconds=UPLOAD_MINUTES * 60, setup=setup)

        waits.append(local.Command(f"{name}-wait-for-{suffix}",
                                   create=pulumi.Output.all(upload.check, *upload.steps).apply(script), opts=opts))
    return waits


def _image(serving: ServingConfig, platform: Platform) -> pulumi.Input[str]:
    if serving.image is not None:
        return serving.image
    if platform.registry_url is None:
        raise ValueError("servestack:serving.image: missing, and this platform has no registry to take "
                         "the image from; name the image")
    return pulumi.Output.concat(platform.registry_url, f"/{DEFAULT_IMAGE_REPOSITORY}:{serving.image_tag}")


def _model_source(model: ModelConfig, platform: Platform) -> pulumi.Input[str] | None:
    """Where the init container fetches the model from; None when the image carries it."""
    if model.source == "image":
        return None
    if model.source == "bucket":
        if platform.model_bucket_uri is None:
            raise ValueError("servestack:model.source: 'bucket' but this platform has no model bucket; "
                             "use image or a URI")
        return pulumi.Output.concat(platform.model_bucket_uri, f"/models/{model.name}")
    return model.source


def _pod_template(name: str, args: ServingArgs, labels: dict[str, str],
                  service_account: k8s.core.v1.ServiceAccount,
                  api_key_secret: k8s.core.v1.Secret | None) -> k8s.core.v1.PodTemplateSpecArgs:
    serving, model, gpu, platform = args.serving, args.model, args.gpu, args.platform
    image = _image(serving, platform)
    source = _model_source(model, platform)
    model_path = BAKED_MODEL_PATH if source is None else f"{MODELS_DIR}/{model.name}"

    env = [
        k8s.core.v1.EnvVarArgs(name="MODEL_PATH", value=model_path),
        k8s.core.v1.EnvVarArgs(name="SERVESTACK_MODEL_NAME", value=model.name),
        k8s.core.v1.EnvVarArgs(name="SERVESTACK_HOST", value="0.0.0.0"),
        k8s.core.v1.EnvVarArgs(name="SERVESTACK_PORT", value=str(PORT)),
        k8s.core.v1.EnvVarArgs(name="SERVESTACK_DRAIN_SECONDS", value=str(serving.drain_seconds)),
        k8s.core.v1.EnvVarArgs(name="SERVESTACK_MAX_BATCH_SIZE", value=str(serving.max_batch_size)),
        k8s.core.v1.EnvVarArgs(name="HF_HOME", value="/tmp/hf"),
        k8s.core.v1.EnvVarArgs(name="HF_HUB_OFFLINE", value="1"),
    ]
    if api_key_secret is not None:
        env.append(k8s.core.v1.EnvVarArgs(
            name="SERVESTACK_API_KEY",
            value_from=k8s.core.v1.EnvVarSourceArgs(secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(
                name=api_key_secret.metadata.name, key="api-key")),
        ))

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
    init_containers = []
    if source is not None:
        volumes.append(k8s.core.v1.VolumeArgs(name="model", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(
            size_limit=f"{model.disk_gb}Gi")))
        mounts.append(k8s.core.v1.VolumeMountArgs(name="model", mount_path=MODELS_DIR, read_only=True))
        init_containers.append(k8s.core.v1.ContainerArgs(
            name="fetch-model",
            image=image,
            command=["python", "-m", "serving.fetch", source, model_path],
            env=[k8s.core.v1.EnvVarArgs(name="HOME", value="/tmp")],
            resources=k8s.core.v1.ResourceRequirementsArgs(requests={"cpu": "500m", "memory": "1Gi"},
                                                           limits={"memory": "2Gi"}),
            security_context=RESTRICTED_CONTAINER,
            volume_mounts=[k8s.core.v1.VolumeMountArgs(name="model", mount_path=MODELS_DIR),
                           k8s.core.v1.VolumeMountArgs(name="tmp", mount_path="/tmp")],
        ))

    annotations = {}
    if not serving.prometheus_operator:
        annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": str(PORT),
                       "prometheus.io/path": "/metrics"}

    def probe(path: str, period: int, timeout: int, failures: int) -> k8s.core.v1.ProbeArgs:
        return k8s.core.v1.ProbeArgs(http_get=k8s.core.v1.HTTPGetActionArgs(path=path, port="http"),
                                     period_seconds=period, timeout_seconds=timeout,
                                     failure_threshold=failures)

    server = k8s.core.v1.ContainerArgs(
        name="server",
        image=image,
        ports=[k8s.core.v1.ContainerPortArgs(name="http", container_port=PORT, protocol="TCP")],
        env=env,
        resources=k8s.core.v1.ResourceRequirementsArgs(
            # No CPU limit: throttling a latency-bound server costs more than it protects.
            requests={"cpu": serving.cpu, "memory": serving.memory}, limits=limits),
        # Loading a model takes minutes: the startup probe allows 15 of them before liveness counts.
        startup_probe=probe("/health/ready", period=10, timeout=5, failures=90),
        readiness_probe=probe("/health/ready", period=5, timeout=3, failures=3),
        liveness_probe=probe("/health/live", period=10, timeout=5, failures=6),
        lifecycle=k8s.core.v1.LifecycleArgs(
            pre_stop=k8s.core.v1.LifecycleHandlerArgs(sleep=k8s.core.v1.SleepActionArgs(seconds=PRE_STOP_SECONDS))),
        security_context=RESTRICTED_CONTAINER,
        volume_mounts=mounts,
    )
    return k8s.core.v1.PodTemplateSpecArgs(
        metadata=k8s.meta.v1.ObjectMetaArgs(labels={**labels, **platform.pod_labels}, annotations=annotations),
        spec=k8s.core.v1.PodSpecArgs(
            service_account_name=service_account.metadata.name,
            automount_service_account_token=False,
            # No Docker-link variables for the namespace's Services: the Service "servestack" would put
            # SERVESTACK_PORT=tcp://IP:PORT and other SERVESTACK_* names into the server's settings prefix.
            enable_service_links=False,
            security_context=k8s.core.v1.PodSecurityContextArgs(
                run_as_non_root=True, run_as_user=RUN_AS_USER, run_as_group=RUN_AS_USER, fs_group=RUN_AS_USER,
                seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault")),
            # preStop pause, then the server's drain, then its shutdown.
            termination_grace_period_seconds=PRE_STOP_SECONDS + serving.drain_seconds + SHUTDOWN_SECONDS,
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


def _service(name: str, args: ServingArgs, labels: dict[str, str], ns: pulumi.Input[str],
             opts: pulumi.ResourceOptions) -> k8s.core.v1.Service:
    serving, access, platform = args.serving, args.access, args.platform
    annotations = dict(platform.load_balancer_annotations)
    if access.internal_load_balancer:
        annotations.update(platform.internal_load_balancer_annotations)
    balanced = platform.service_type == "LoadBalancer"
    return k8s.core.v1.Service(
        f"{name}-service",
        metadata=k8s.meta.v1.ObjectMetaArgs(name="servestack", namespace=ns, labels=labels,
                                            annotations=(annotations or None) if balanced else None),
        spec=k8s.core.v1.ServiceSpecArgs(
            type=platform.service_type,
            selector=labels,
            ports=[k8s.core.v1.ServicePortArgs(name="http", port=serving.port, target_port="http",
                                               protocol="TCP")],
            load_balancer_source_ranges=(list(access.endpoint_cidrs) or None) if balanced else None,
            # Keep the client's address, so that source ranges and the network policy see it.
            external_traffic_policy="Local" if balanced else None,
        ),
        opts=opts,
    )


def _autoscaler(name: str, args: ServingArgs, deployment: k8s.apps.v1.Deployment, ns: pulumi.Input[str],
                labels: dict[str, str], opts: pulumi.ResourceOptions) -> None:
    serving = args.serving
    metrics = [k8s.autoscaling.v2.MetricSpecArgs(
        type="Resource",
        resource=k8s.autoscaling.v2.ResourceMetricSourceArgs(
            name="cpu", target=k8s.autoscaling.v2.MetricTargetArgs(type="Utilization", average_utilization=70)),
    )]
    if serving.prometheus_operator:
        # Queued requests are the honest load signal of a GPU server; it needs prometheus-adapter.
        metrics.append(k8s.autoscaling.v2.MetricSpecArgs(
            type="Pods",
            pods=k8s.autoscaling.v2.PodsMetricSourceArgs(
                metric=k8s.autoscaling.v2.MetricIdentifierArgs(name="servestack_num_requests_waiting"),
                target=k8s.autoscaling.v2.MetricTargetArgs(type="AverageValue", average_value="4")),
        ))
    k8s.autoscaling.v2.HorizontalPodAutoscaler(
        f"{name}-autoscaler",
        metadata=k8s.meta.v1.ObjectMetaArgs(name="servestack", namespace=ns, labels=labels),
        spec=k8s.autoscaling.v2.HorizontalPodAutoscalerSpecArgs(
            scale_target_ref=k8s.autoscaling.v2.CrossVersionObjectReferenceArgs(
                api_version="apps/v1", kind="Deployment", name=deployment.metadata.name),
            min_replicas=serving.min_replicas,
            max_replicas=serving.max_replicas,
            metrics=metrics,
            # GPU nodes take minutes to arrive; do not give them back at the first quiet minute.
            behavior=k8s.autoscaling.v2.HorizontalPodAutoscalerBehaviorArgs(
                scale_down=k8s.autoscaling.v2.HPAScalingRulesArgs(stabilization_window_seconds=600)),
        ),
        opts=opts,
    )


def _network_policy(name: str, args: ServingArgs, labels: dict[str, str], ns: pulumi.Input[str],
                    opts: pulumi.ResourceOptions) -> None:
    access, platform, serving = args.access, args.platform, args.serving
    clients = list(access.endpoint_cidrs) or list(platform.internal_cidrs)
    if not clients:
        # The policy would admit no client at all: an endpoint that nobody can reach.
        raise ValueError("servestack:access.endpointCidrs: empty, and the internal load balancer's clients are "
                         f"unknown on the {platform.cloud} platform; list them in endpointCidrs")
    port = [k8s.networking.v1.NetworkPolicyPortArgs(port=PORT, protocol="TCP")]
    rules = [k8s.networking.v1.NetworkPolicyIngressRuleArgs(
        ports=port,
        from_=[k8s.networking.v1.NetworkPolicyPeerArgs(ip_block=k8s.networking.v1.IPBlockArgs(cidr=c))
               for c in clients],
    )]
    # The metrics scraper, from its own namespace.
    rules.append(k8s.networking.v1.NetworkPolicyIngressRuleArgs(
        ports=port,
        from_=[k8s.networking.v1.NetworkPolicyPeerArgs(namespace_selector=k8s.meta.v1.LabelSelectorArgs(
            match_labels={"kubernetes.io/metadata.name": serving.monitoring_namespace}))],
    ))
    k8s.networking.v1.NetworkPolicy(
        f"{name}-network-policy",
        metadata=k8s.meta.v1.ObjectMetaArgs(name="servestack", namespace=ns, labels=labels),
        spec=k8s.networking.v1.NetworkPolicySpecArgs(
            pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=labels),
            policy_types=["Ingress"],
            ingress=rules,
        ),
        opts=opts,
    )


def _service_monitor(name: str, labels: dict[str, str], ns: pulumi.Input[str],
                     opts: pulumi.ResourceOptions) -> None:
    k8s.apiextensions.CustomResource(
        f"{name}-service-monitor",
        api_version="monitoring.coreos.com/v1",
        kind="ServiceMonitor",
        metadata=k8s.meta.v1.ObjectMetaArgs(name="servestack", namespace=ns, labels=labels),
        spec={"selector": {"matchLabels": labels},
              "endpoints": [{"targetPort": PORT, "path": "/metrics", "interval": "15s"}]},
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
