"""The latency half without a cloud: decode speed estimated from the GPU's memory bandwidth.

Decoding one token per sequence reads every weight once per step, plus each running sequence's keys and
values; on a GPU that read, not the arithmetic, bounds the step at the batch sizes servestack serves. So

    step time = (weight bytes + batch x context x cache bytes per token) / (bandwidth x EFFICIENCY)
    time per output token (TPOT) = step time;  output tokens/s of one replica = batch / step time

with the model's size from its config.json (infra/modelsize.py: parameters from the architecture fields,
bfloat16 on the GPU as the engine loads it), the bandwidth from the GPU's datasheet (infra/catalog.py), the
context of the fixed workload `serving.bench` runs by default (128 prompt tokens, 64 output tokens: a mean
of 128 + 64/2 = 160 tokens in the cache while decoding), at batch 1 and at the stack's
`serving.maxBatchSize`. It is an upper bound on speed: compute, kernel launches and the engine's own
per-step work are left out, which dominate for a model as small as `tiny`. Every figure here is an estimate,
and says so wherever it is shown; a measured stack shows its measurement only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from infra import catalog, modelsize
from infra.config import ConfigError, parse_config

# The share of the datasheet's bandwidth a decode step achieves ("model bandwidth utilization"): 60%, the low
# end of the 60-85% reported for tuned serving stacks (Databricks, "LLM Inference Performance Engineering:
# Best Practices", 2023); our engine is a plain PyTorch loop, not a tuned kernel set.
EFFICIENCY = 0.6
INPUT_TOKENS, OUTPUT_TOKENS = 128, 64  # serving.bench's default workload
CONTEXT_TOKENS = INPUT_TOKENS + OUTPUT_TOKENS // 2  # the mean cache length over the decode


@dataclass(frozen=True)
class Decode:
    batch: int
    tpot_ms: float
    tokens_per_second: float  # of one replica

    def to_dict(self) -> dict[str, Any]:
        return {"batch": self.batch, "tpot_ms": round(self.tpot_ms, 6),
                "tokens_per_second": round(self.tokens_per_second, 1)}


@dataclass(frozen=True)
class LatencyEstimate:
    model: str
    parameters: int
    dtype: str
    gpu_type: str
    bandwidth_gbps: int
    single: Decode  # batch 1
    batched: Decode  # the configured batch

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "estimate", "model": self.model, "parameters": self.parameters, "dtype": self.dtype,
                "gpu": self.gpu_type, "memory_bandwidth_gbps": self.bandwidth_gbps, "efficiency": EFFICIENCY,
                "context_tokens": CONTEXT_TOKENS, "batch_1": self.single.to_dict(),
                "batch_max": self.batched.to_dict()}


def decode(model: modelsize.ModelShape, bandwidth_gbps: float, batch: int) -> Decode:
    read = model.weight_bytes() + model.kv_cache_bytes(batch, CONTEXT_TOKENS)
    step = read / (bandwidth_gbps * 1e9 * EFFICIENCY)
    return Decode(batch, step * 1000, batch / step)


def latency(machine: catalog.GpuMachine, model: modelsize.ModelShape, batch: int) -> LatencyEstimate:
    bandwidth = machine.memory_bandwidth_gbps
    return LatencyEstimate(model.name, model.parameters, modelsize.GPU_DTYPE, machine.gpu_type, bandwidth,
                           decode(model, bandwidth, 1), decode(model, bandwidth, batch))


def for_plan(plan: Mapping[str, Any], machine: catalog.GpuMachine | None) -> LatencyEstimate | str:
    """The estimate of a planned stack whose serving pool runs on `machine`, or why there is none."""
    if machine is None:
        return "no GPU machine in the plan's serving pool"
    try:
        config = parse_config(str(plan["stack"]), plan.get("config") or {})
        model = modelsize.known(config.model.name)
    except (ConfigError, modelsize.ModelSizeError) as error:
        return str(error)
    if model is None:
        return (f"model {config.model.name}: no config.json in infra/models/ (known: "
                f"{', '.join(modelsize.known_names())})")
    return latency(machine, model, config.serving.max_batch_size)
