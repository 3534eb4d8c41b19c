"""The servestack Pulumi program: stack config -> cloud platform -> serving deployment -> outputs."""

import pulumi

from infra.clouds import build_platform
from infra.config import load_stack_config
from infra.serving import ServingArgs, ServingDeployment

config = load_stack_config()
platform = build_platform(config)
serving = ServingDeployment(
    "servestack",
    ServingArgs(serving=config.serving, model=config.model, gpu=config.gpu, access=config.access,
                platform=platform),
)

pulumi.export("endpoint", serving.endpoint)
if serving.connect is not None:
    pulumi.export("connect", serving.connect)
pulumi.export("cloud", config.cloud)
pulumi.export("environment", config.environment)
pulumi.export("region", config.region or "")
pulumi.export("gpu_type", config.gpu.type or "none")
pulumi.export("gpu_machine_type", config.gpu.machine_type or "")
pulumi.export("gpus_per_node", config.gpu.count)
pulumi.export("gpu_nodes_min", config.gpu.min_nodes)
pulumi.export("gpu_nodes_max", config.gpu.max_nodes)
# The catalog's list price of one GPU node (spot where the pool is); `servestack cost` prices the whole plan.
machine = config.gpu_machine()
pulumi.export("gpu_node_usd_per_hour", machine.price_per_hour(config.gpu.spot) if machine else 0.0)
pulumi.export("namespace", serving.namespace)
if platform.cluster_name is not None:
    pulumi.export("cluster_name", platform.cluster_name)
if platform.kubeconfig is not None:
    pulumi.export("kubeconfig", pulumi.Output.secret(platform.kubeconfig))
pulumi.export("registry_url", platform.registry_url or "")
pulumi.export("model_bucket_uri", platform.model_bucket_uri or "")
if serving.api_key is not None:
    pulumi.export("api_key", serving.api_key)
