"""The servestack Pulumi program: stack config -> cloud platform -> serving deployment -> gateway -> outputs."""

import pulumi

from infra import catalog
from infra.autoscaling import Keda, QueueScaling
from infra.clouds import build_platform
from infra.config import load_stack_config
from infra.gateway import EntryGateway, GatewayArgs
from infra.monitoring import Monitoring, MonitoringArgs
from infra.serving import ServingArgs, ServingDeployment

config = load_stack_config()
platform = build_platform(config)
# The cluster's own Prometheus (servestack:monitoring); with it, KEDA scales the servers on their queue
# (infra/autoscaling.py).
monitoring = None
queue_scaling = None
if config.monitoring.enabled:
    monitoring = Monitoring("servestack-monitoring", MonitoringArgs(
        monitoring=config.monitoring, gpu=config.gpu, platform=platform, serving_namespace=config.serving.namespace))
    keda = Keda("servestack", platform)
    queue_scaling = QueueScaling(prometheus_url=monitoring.prometheus_url, ready=[keda.release])
serving = ServingDeployment(
    "servestack",
    ServingArgs(serving=config.serving, model=config.model, gpu=config.gpu, access=config.access,
                platform=platform, behind_gateway=config.gateway.enabled,
                scraper=monitoring.scraper if monitoring else None, queue_scaling=queue_scaling),
)
endpoint, connect = serving.endpoint, serving.connect
if config.gateway.enabled:
    gateway = EntryGateway("servestack", GatewayArgs(
        gateway=config.gateway, access=config.access, platform=platform, namespace=serving.namespace,
        backends=serving.backends, rolled_out=serving.deployments))
    endpoint, connect = gateway.endpoint, gateway.connect
    # Where the hostname's DNS record points (servestack creates it where the stack names a DNS zone).
    pulumi.export("address", gateway.address)

pulumi.export("endpoint", endpoint)
if connect is not None:
    pulumi.export("connect", connect)
pulumi.export("cloud", config.cloud)
pulumi.export("environment", config.environment)
pulumi.export("region", config.region or "")
pulumi.export("gpu_type", config.gpu.type or "none")
pulumi.export("gpu_machine_type", config.gpu.machine_type or "")
pulumi.export("gpus_per_node", config.gpu.count)
pulumi.export("gpu_nodes_min", config.gpu.min_nodes)
pulumi.export("gpu_nodes_max", config.gpu.max_nodes)


def _gpu_node_price() -> float | None:
    """The catalog's list price of one GPU node in the stack's region (spot where the pool is); None in a region
    the catalog does not hold, rather than another region's. `servestack cost` prices the whole plan."""
    machine = config.gpu_machine()
    if machine is None:
        return 0.0
    try:
        return machine.price(config.region or "", config.gpu.spot).usd_per_hour
    except catalog.Unpriced:
        return None


pulumi.export("gpu_node_usd_per_hour", _gpu_node_price())
pulumi.export("namespace", serving.namespace)
pulumi.export("model_revision", config.stable_revision)
if config.serving.canary_pods and config.serving.canary is not None:
    pulumi.export("canary", {"revision": config.serving.canary.revision, "weight": config.serving.canary.weight})
if platform.cluster_name is not None:
    pulumi.export("cluster_name", platform.cluster_name)
if platform.kubeconfig is not None:
    pulumi.export("kubeconfig", pulumi.Output.secret(platform.kubeconfig))
pulumi.export("registry_url", platform.registry_url or "")
pulumi.export("model_bucket_uri", platform.model_bucket_uri or "")
if monitoring is not None:
    # `pulumi stack output grafana`, then http://127.0.0.1:3000 as admin with this password.
    pulumi.export("grafana", monitoring.grafana)
    pulumi.export("grafana_admin_password", monitoring.grafana_password)
if serving.api_keys is not None:
    # Each client's key, by client id: `pulumi stack output api_keys --show-secrets`.
    pulumi.export("api_keys", serving.api_keys)
