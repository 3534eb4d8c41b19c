"""Where GKE can run each GPU: the zones per region, and the machine family that carries each GPU."""

from __future__ import annotations

from infra.config import ConfigError, StackConfig

# Where each GPU is offered, per region (Compute Engine "GPU locations", 2025). A zone missing here
# cannot be configured: add it once Google lists it. Check a region with
#   gcloud compute accelerator-types list --filter="zone~^us-central1 AND name=nvidia-l4"
GPU_ZONES: dict[str, dict[str, tuple[str, ...]]] = {
    "us-central1": {
        "nvidia-l4": ("us-central1-a", "us-central1-b", "us-central1-c"),
        "nvidia-tesla-a100": ("us-central1-a", "us-central1-b", "us-central1-c", "us-central1-f"),
        "nvidia-a100-80gb": ("us-central1-a", "us-central1-c"),
        "nvidia-h100-80gb": ("us-central1-a", "us-central1-c"),
    },
    "us-east1": {
        "nvidia-l4": ("us-east1-b", "us-east1-c", "us-east1-d"),
        "nvidia-tesla-a100": ("us-east1-b",),
    },
    "us-east4": {
        "nvidia-l4": ("us-east4-a", "us-east4-c"),
        "nvidia-a100-80gb": ("us-east4-c",),
        "nvidia-h100-80gb": ("us-east4-a", "us-east4-b", "us-east4-c"),
    },
    "us-west1": {
        "nvidia-l4": ("us-west1-a", "us-west1-b", "us-west1-c"),
        "nvidia-tesla-a100": ("us-west1-b",),
        "nvidia-h100-80gb": ("us-west1-a", "us-west1-b"),
    },
    "us-west4": {
        "nvidia-l4": ("us-west4-a", "us-west4-c"),
        "nvidia-tesla-a100": ("us-west4-b",),
    },
    "europe-west1": {
        "nvidia-l4": ("europe-west1-b", "europe-west1-c"),
    },
    "europe-west4": {
        "nvidia-l4": ("europe-west4-a", "europe-west4-b", "europe-west4-c"),
        "nvidia-tesla-a100": ("europe-west4-a", "europe-west4-b"),
        "nvidia-a100-80gb": ("europe-west4-a",),
        "nvidia-h100-80gb": ("europe-west4-b", "europe-west4-c"),
    },
    "asia-southeast1": {
        "nvidia-l4": ("asia-southeast1-a", "asia-southeast1-b", "asia-southeast1-c"),
        "nvidia-tesla-a100": ("asia-southeast1-b", "asia-southeast1-c"),
        "nvidia-a100-80gb": ("asia-southeast1-c",),
        "nvidia-h100-80gb": ("asia-southeast1-b", "asia-southeast1-c"),
    },
}
# The machine family that carries each GPU: G2 for L4, A2 for A100, A3 for H100.
GPU_MACHINE_FAMILIES = {
    "nvidia-l4": "g2-",
    "nvidia-tesla-a100": "a2-highgpu-",
    "nvidia-a100-80gb": "a2-ultragpu-",
    "nvidia-h100-80gb": "a3-",
}


def gpu_zones(config: StackConfig) -> tuple[str, ...]:
    """The GPU pool's zones: the configured ones, or every zone of the region that offers the GPU.

    Raises ConfigError naming the key, the value and what is allowed.
    """
    region, gpu_type, machine_type = config.region or "", config.gpu.type or "", config.gpu.machine_type or ""
    problems = []
    family = GPU_MACHINE_FAMILIES.get(gpu_type)
    if family is None:
        problems.append(f"servestack:gpu.type: {gpu_type!r} has no GKE machine family known to servestack; "
                        f"allowed: {', '.join(sorted(GPU_MACHINE_FAMILIES))}")
    elif not machine_type.startswith(family):
        problems.append(f"servestack:gpu.machineType: {machine_type!r} does not carry {gpu_type}; use a "
                        f"{family}* machine type")
    offered = GPU_ZONES.get(region, {}).get(gpu_type, ())
    if not offered:
        regions = sorted(r for r, gpus in GPU_ZONES.items() if gpu_type in gpus)
        problems.append(f"gcp:region: {region!r} offers no {gpu_type} GPUs known to servestack; allowed for "
                        f"{gpu_type}: {', '.join(regions) or 'none'}")
    for i, zone in enumerate(config.gcp.zones if offered else ()):
        if zone not in offered:
            problems.append(f"servestack:gcp.zones[{i}]: {gpu_type} is not offered in {zone!r}; allowed in "
                            f"{region}: {', '.join(offered)}")
    if problems:
        raise ConfigError(config.stack, problems)
    return config.gcp.zones or offered
