"""The GPU machine catalog: which machine types each cloud offers for which GPU, what the GPUs are, and what
an hour costs in each region.

One catalog feeds config validation (is this GPU or machine type known on this cloud? does the model fit
the GPU?), the policy pack's budget rule, the cost estimate and the latency estimate. The hardware is here;
the prices are in `infra/prices.json`, per cloud, region and machine type, each with its source and as-of
date, as `servestack catalog refresh` writes them from the clouds' public price APIs. They are list prices
in US dollars per hour (Linux, on demand; spot prices move daily), estimates for comparison, not quotes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

CLOUDS = ("local", "aws", "gcp", "azure")
PRICED_CLOUDS = tuple(c for c in CLOUDS if c != "local")  # a local cluster is paid for elsewhere
PRICES_FILE = Path(__file__).resolve().parent / "prices.json"
# The region the budget rule prices in (it judges a plan, whose region it does not read).
REFERENCE_REGIONS = {"aws": "us-east-1", "gcp": "us-central1", "azure": "eastus"}


@dataclass(frozen=True)
class Gpu:
    description: str
    memory_gb: int  # per GPU, as the datasheet gives it (decimal gigabytes)
    memory_bandwidth_gbps: int  # GB/s, the datasheet's peak
    source: str  # the datasheet

    @property
    def memory_bytes(self) -> int:
        return self.memory_gb * 10**9


_NVIDIA = "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center"
# GPU name -> the datasheet's figures. The names follow GKE's accelerator names.
GPU_TYPES: dict[str, Gpu] = {
    "nvidia-t4": Gpu("NVIDIA T4", 16, 320, f"{_NVIDIA}/tesla-t4/t4-tensor-core-datasheet-951643.pdf"),
    "nvidia-a10g": Gpu("NVIDIA A10G", 24, 600, "https://aws.amazon.com/ec2/instance-types/g5/"),
    "nvidia-a10": Gpu("NVIDIA A10", 24, 600, f"{_NVIDIA}/a10/pdf/datasheet-new/nvidia-a10-datasheet.pdf"),
    "nvidia-l4": Gpu("NVIDIA L4", 24, 300, "https://www.nvidia.com/en-us/data-center/l4/"),
    "nvidia-l40s": Gpu("NVIDIA L40S", 48, 864, "https://www.nvidia.com/en-us/data-center/l40s/"),
    "nvidia-tesla-a100": Gpu("NVIDIA A100 40GB SXM", 40, 1555,
                             f"{_NVIDIA}/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf"),
    "nvidia-a100-80gb": Gpu("NVIDIA A100 80GB SXM", 80, 2039,
                            f"{_NVIDIA}/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf"),
    "nvidia-h100-80gb": Gpu("NVIDIA H100 80GB SXM", 80, 3350, "https://www.nvidia.com/en-us/data-center/h100/"),
}


@dataclass(frozen=True)
class Price:
    usd_per_hour: float
    source: str  # the API or page it was read from
    as_of: str  # ISO date it was read (a year alone for figures read by hand)
    region: str


class UnknownMachine(LookupError):
    pass


class Unpriced(LookupError):
    """The catalog has no price for this machine type or fee in this region."""


@cache
def _prices() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(PRICES_FILE.read_text())
    return data


def _price(entry: dict[str, Any], region: str) -> Price:
    return Price(float(entry["usd_per_hour"]), str(entry["source"]), str(entry["as_of"]), region)


def machine_price(cloud: str, region: str, machine_type: str, spot: bool = False) -> Price:
    """The hourly price of one machine of this type in this region, or Unpriced saying what is known."""
    regions = _prices()["machines"].get(cloud, {})
    if region not in regions:
        raise Unpriced(f"no prices for {cloud} region {region!r} in the catalog (it holds "
                       f"{', '.join(sorted(regions)) or 'none'}); add it with `servestack catalog refresh "
                       f"--region {cloud}:{region}`")
    entry = regions[region].get(machine_type)
    kind = "spot" if spot else "on_demand"
    if entry is None or kind not in entry:
        raise Unpriced(f"no {kind.replace('_', '-')} price for {machine_type} in {cloud} {region}")
    return _price(entry[kind], region)


def fee(cloud: str, name: str) -> Price:
    """A fixed hourly fee (control plane, NAT, load balancer, public IPv4): the reference region's list price."""
    entry = _prices()["fees"].get(cloud, {}).get(name)
    if entry is None:
        raise Unpriced(f"no {name} fee for {cloud} in the catalog")
    return _price(entry, REFERENCE_REGIONS[cloud])


@dataclass(frozen=True)
class GpuMachine:
    cloud: str
    machine_type: str
    gpu_type: str  # servestack's cloud-neutral GPU name, e.g. "nvidia-l4"
    gpus: int
    vcpus: int
    memory_gb: int
    # The machine's GPU variant where it differs from the type's datasheet (Azure's A100 v4 are PCIe).
    bandwidth_gbps: int | None = None

    @property
    def gpu(self) -> Gpu:
        return GPU_TYPES[self.gpu_type]

    @property
    def memory_bandwidth_gbps(self) -> int:
        return self.bandwidth_gbps or self.gpu.memory_bandwidth_gbps

    def price(self, region: str, spot: bool = False) -> Price:
        return machine_price(self.cloud, region, self.machine_type, spot)

    def price_per_hour(self, spot: bool) -> float:
        """In the cloud's reference region."""
        return self.price(REFERENCE_REGIONS[self.cloud], spot).usd_per_hour

    @property
    def on_demand_per_hour(self) -> float:
        return self.price_per_hour(False)

    @property
    def spot_per_hour(self) -> float:
        return self.price_per_hour(True)


_m = GpuMachine
MACHINES: tuple[GpuMachine, ...] = (
    _m("aws", "g5.xlarge", "nvidia-a10g", 1, 4, 16),
    _m("aws", "g5.2xlarge", "nvidia-a10g", 1, 8, 32),
    _m("aws", "g5.12xlarge", "nvidia-a10g", 4, 48, 192),
    _m("aws", "g6.xlarge", "nvidia-l4", 1, 4, 16),
    _m("aws", "g6.2xlarge", "nvidia-l4", 1, 8, 32),
    _m("aws", "g6.12xlarge", "nvidia-l4", 4, 48, 192),
    _m("aws", "g6e.xlarge", "nvidia-l40s", 1, 4, 32),
    _m("aws", "g6e.12xlarge", "nvidia-l40s", 4, 48, 384),
    _m("aws", "p4d.24xlarge", "nvidia-tesla-a100", 8, 96, 1152),
    _m("aws", "p5.48xlarge", "nvidia-h100-80gb", 8, 192, 2048),
    # GCP Compute Engine: the machine's cores and memory plus its attached GPUs, priced apart
    _m("gcp", "g2-standard-4", "nvidia-l4", 1, 4, 16),
    _m("gcp", "g2-standard-8", "nvidia-l4", 1, 8, 32),
    _m("gcp", "g2-standard-48", "nvidia-l4", 4, 48, 192),
    _m("gcp", "a2-highgpu-1g", "nvidia-tesla-a100", 1, 12, 85),
    _m("gcp", "a2-ultragpu-1g", "nvidia-a100-80gb", 1, 12, 170),
    _m("gcp", "a3-highgpu-8g", "nvidia-h100-80gb", 8, 208, 1872),
    # Azure
    _m("azure", "Standard_NC4as_T4_v3", "nvidia-t4", 1, 4, 28),
    _m("azure", "Standard_NC8as_T4_v3", "nvidia-t4", 1, 8, 56),
    _m("azure", "Standard_NV36ads_A10_v5", "nvidia-a10", 1, 36, 440),
    # NC A100 v4: the PCIe A100 80GB, 1935 GB/s (the A100 datasheet)
    _m("azure", "Standard_NC24ads_A100_v4", "nvidia-a100-80gb", 1, 24, 220, 1935),
    _m("azure", "Standard_NC96ads_A100_v4", "nvidia-a100-80gb", 4, 96, 880, 1935),
    _m("azure", "Standard_ND96isr_H100_v5", "nvidia-h100-80gb", 8, 96, 1900),
)

# The CPU machine types the stacks use for system nodes (and close alternatives): vCPUs and memory GB,
# which GCP prices apart.
CPU_MACHINES: dict[tuple[str, str], tuple[int, int]] = {
    ("aws", "m6i.large"): (2, 8),
    ("aws", "m6i.xlarge"): (4, 16),
    ("aws", "m7i.large"): (2, 8),
    ("gcp", "e2-standard-2"): (2, 8),
    ("gcp", "e2-standard-4"): (4, 16),
    ("azure", "Standard_D2ds_v5"): (2, 8),
    ("azure", "Standard_D4ds_v5"): (4, 16),
}

GCP_NAT_MAX_VMS = 32  # Cloud NAT charges per VM using it, up to this many


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
    """The cheapest machine with this GPU (and GPU count, if given) on this cloud, on demand in its reference
    region."""
    fits = [m for m in machines(cloud) if m.gpu_type == gpu_type and (gpus is None or m.gpus == gpus)]
    return min(fits, key=lambda m: m.on_demand_per_hour, default=None)


def cpu_price(cloud: str, region: str, machine_type: str) -> Price | None:
    """The on-demand price of a CPU machine type, or None when the catalog does not know the type."""
    if (cloud, machine_type) not in CPU_MACHINES:
        return None
    return machine_price(cloud, region, machine_type)
