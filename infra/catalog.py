"""The GPU machine catalog: which machine types each cloud offers for which GPU, and what an hour costs.

One table feeds config validation (is this GPU or machine type known on this cloud?), the policy pack's
budget rule and the cost estimate. Prices are public on-demand list prices in US dollars per hour in each
cloud's reference region (AWS us-east-1, GCP us-central1, Azure eastus), Linux, as published in 2025;
spot prices are typical recent figures, which move daily. They are estimates for comparison, not quotes.
"""

from __future__ import annotations

from dataclasses import dataclass

CLOUDS = ("local", "aws", "gcp", "azure")


@dataclass(frozen=True)
class GpuMachine:
    cloud: str
    machine_type: str
    gpu_type: str  # servestack's cloud-neutral GPU name, e.g. "nvidia-l4"
    gpus: int
    gpu_memory_gb: int  # per GPU
    vcpus: int
    memory_gb: int
    on_demand_per_hour: float
    spot_per_hour: float

    def price_per_hour(self, spot: bool) -> float:
        return self.spot_per_hour if spot else self.on_demand_per_hour


# GPU name -> (GPU memory in GB, a short description). The names follow GKE's accelerator names.
GPU_TYPES: dict[str, tuple[int, str]] = {
    "nvidia-t4": (16, "NVIDIA T4"),
    "nvidia-a10g": (24, "NVIDIA A10G"),
    "nvidia-a10": (24, "NVIDIA A10"),
    "nvidia-l4": (24, "NVIDIA L4"),
    "nvidia-l40s": (48, "NVIDIA L40S"),
    "nvidia-tesla-a100": (40, "NVIDIA A100 40GB"),
    "nvidia-a100-80gb": (80, "NVIDIA A100 80GB"),
    "nvidia-h100-80gb": (80, "NVIDIA H100 80GB"),
}


def _m(cloud: str, machine_type: str, gpu_type: str, gpus: int, vcpus: int, memory_gb: int,
       on_demand: float, spot: float) -> GpuMachine:
    return GpuMachine(cloud, machine_type, gpu_type, gpus, GPU_TYPES[gpu_type][0], vcpus, memory_gb,
                      on_demand, spot)


MACHINES: tuple[GpuMachine, ...] = (
    # AWS EC2, us-east-1
    _m("aws", "g5.xlarge", "nvidia-a10g", 1, 4, 16, 1.006, 0.41),
    _m("aws", "g5.2xlarge", "nvidia-a10g", 1, 8, 32, 1.212, 0.49),
    _m("aws", "g5.12xlarge", "nvidia-a10g", 4, 48, 192, 5.672, 2.30),
    _m("aws", "g6.xlarge", "nvidia-l4", 1, 4, 16, 0.805, 0.33),
    _m("aws", "g6.2xlarge", "nvidia-l4", 1, 8, 32, 0.978, 0.40),
    _m("aws", "g6.12xlarge", "nvidia-l4", 4, 48, 192, 4.602, 1.84),
    _m("aws", "g6e.xlarge", "nvidia-l40s", 1, 4, 32, 1.861, 0.75),
    _m("aws", "g6e.12xlarge", "nvidia-l40s", 4, 48, 384, 10.493, 4.20),
    _m("aws", "p4d.24xlarge", "nvidia-tesla-a100", 8, 96, 1152, 21.958, 9.90),
    _m("aws", "p5.48xlarge", "nvidia-h100-80gb", 8, 192, 2048, 55.040, 27.50),
    # GCP Compute Engine, us-central1 (machine plus attached GPUs)
    _m("gcp", "g2-standard-4", "nvidia-l4", 1, 4, 16, 0.707, 0.28),
    _m("gcp", "g2-standard-8", "nvidia-l4", 1, 8, 32, 0.854, 0.34),
    _m("gcp", "g2-standard-48", "nvidia-l4", 4, 48, 192, 4.000, 1.60),
    _m("gcp", "a2-highgpu-1g", "nvidia-tesla-a100", 1, 12, 85, 3.673, 1.47),
    _m("gcp", "a2-ultragpu-1g", "nvidia-a100-80gb", 1, 12, 170, 5.069, 2.03),
    _m("gcp", "a3-highgpu-8g", "nvidia-h100-80gb", 8, 208, 1872, 88.250, 30.00),
    # Azure, eastus
    _m("azure", "Standard_NC4as_T4_v3", "nvidia-t4", 1, 4, 28, 0.526, 0.16),
    _m("azure", "Standard_NC8as_T4_v3", "nvidia-t4", 1, 8, 56, 0.752, 0.23),
    _m("azure", "Standard_NV36ads_A10_v5", "nvidia-a10", 1, 36, 440, 3.200, 0.96),
    _m("azure", "Standard_NC24ads_A100_v4", "nvidia-a100-80gb", 1, 24, 220, 3.673, 1.10),
    _m("azure", "Standard_NC96ads_A100_v4", "nvidia-a100-80gb", 4, 96, 880, 14.692, 4.41),
    _m("azure", "Standard_ND96isr_H100_v5", "nvidia-h100-80gb", 8, 96, 1900, 98.320, 29.50),
)


class UnknownMachine(LookupError):
    pass


def machines(cloud: str) -> tuple[GpuMachine, ...]:
    return tuple(m for m in MACHINES if m.cloud == cloud)


def machine(cloud: str, machine_type: str) -> GpuMachine:
    for m in MACHINES:
        if m.cloud == cloud and m.machine_type == machine_type:
            return m
    raise UnknownMachine(f"{machine_type} is not a GPU machine type servestack knows on {cloud}")


def gpu_types(cloud: str) -> list[str]:
    return sorted({m.gpu_type for m in machines(cloud)})


def cheapest(cloud: str, gpu_type: str, gpus: int | None = None) -> GpuMachine | None:
    """The cheapest on-demand machine with this GPU (and GPU count, if given) on this cloud."""
    fits = [m for m in machines(cloud) if m.gpu_type == gpu_type and (gpus is None or m.gpus == gpus)]
    return min(fits, key=lambda m: m.on_demand_per_hour, default=None)


# --- what a cluster costs besides its GPU nodes (same regions, same caveats) ---------------------------

# On-demand $/hour of the CPU machine types the stacks use for system nodes (and close alternatives).
CPU_MACHINES: dict[tuple[str, str], float] = {
    ("aws", "m6i.large"): 0.096,
    ("aws", "m6i.xlarge"): 0.192,
    ("aws", "m7i.large"): 0.1008,
    ("gcp", "e2-standard-2"): 0.067,
    ("gcp", "e2-standard-4"): 0.134,
    ("azure", "Standard_D2ds_v5"): 0.113,
    ("azure", "Standard_D4ds_v5"): 0.226,
}

# The managed control plane: EKS standard support, GKE's cluster management fee, AKS by pricing tier.
CONTROL_PLANE_PER_HOUR = {"aws": 0.10, "gcp": 0.10}
AKS_TIER_PER_HOUR = {"free": 0.0, "standard": 0.10, "premium": 0.60}

# A NAT gateway's hourly charge (AWS and Azure); Cloud NAT on GCP is charged per VM that uses it, up to 32.
NAT_GATEWAY_PER_HOUR = {"aws": 0.045, "azure": 0.045}
GCP_NAT_PER_VM_HOUR = 0.0014
GCP_NAT_MAX_VMS = 32

# The load balancer in front of the serving Service: an AWS NLB, a GCP forwarding rule, an Azure Standard
# load balancer rule (hourly part only; data processed is charged by the GB).
LOAD_BALANCER_PER_HOUR = {"aws": 0.0225, "gcp": 0.025, "azure": 0.025}
# A public IPv4 address: AWS charges every one (NAT gateways' Elastic IPs, an internet-facing NLB's address
# in each of its subnets), Azure every Standard public IP (the NAT gateway's, the load balancer's frontend).
PUBLIC_IPV4_PER_HOUR = {"aws": 0.005, "azure": 0.005}


PRICED_CLOUDS = tuple(c for c in CLOUDS if c != "local")  # a local cluster is paid for elsewhere


def cpu_price(cloud: str, machine_type: str) -> float | None:
    """On-demand $/hour of a CPU machine type, or None when the catalog does not know it."""
    return CPU_MACHINES.get((cloud, machine_type))
