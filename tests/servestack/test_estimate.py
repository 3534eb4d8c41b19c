"""servestack.estimate: decode speed from memory bandwidth, checked by hand; marked as an estimate wherever shown."""

from __future__ import annotations

import copy
import json
import math
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from infra import catalog, modelsize
from servestack.compare import Measured, Row, _cells
from servestack.cost import estimate
from servestack.estimate import CONTEXT_TOKENS, EFFICIENCY, for_plan, latency

Plan = Callable[[str], dict[str, Any]]


def test_smollm2_on_an_l4_by_hand() -> None:
    # smollm2: 134,515,008 parameters (30 layers, 3 KV heads of 64), bfloat16 on the GPU. L4: 300 GB/s x 0.6.
    #   weights              134,515,008 x 2 B                          = 269,030,016 B
    #   cache per token      2 (k, v) x 30 x 3 x 64 x 2 B               =      23,040 B
    #   context              128 prompt + 64 / 2 output tokens           =         160
    #   batch 1:  (269,030,016 + 1 x 160 x 23,040) B / 180e9 B/s        = 1.515091 ms -> 660.0 tok/s
    #   batch 16: (269,030,016 + 16 x 160 x 23,040) B / 180e9 B/s       = 1.822291 ms -> 16 / 1.822291 ms = 8780.2 tok/s
    assert (EFFICIENCY, CONTEXT_TOKENS) == (0.6, 160)
    model = modelsize.known("smollm2")
    assert model is not None and model.parameters == 134_515_008
    result = latency(catalog.machine("aws", "g6.xlarge"), model, 16)
    assert result.bandwidth_gbps == 300 and result.dtype == "bfloat16"
    assert result.single.tpot_ms == pytest.approx(1.5150912)
    assert result.single.tokens_per_second == pytest.approx(660.026, abs=1e-3)
    assert result.batched.tpot_ms == pytest.approx(1.8222912)
    assert result.batched.tokens_per_second == pytest.approx(8780.155, abs=1e-3)
    assert result.to_dict()["kind"] == "estimate"


def test_azure_a100_v4_is_the_pcie_part() -> None:
    # The same GPU name, another bandwidth: the NC A100 v4 carry the PCIe A100 80GB (1935 GB/s), GCP's a2-ultragpu
    # the SXM one (2039 GB/s).
    assert catalog.machine("azure", "Standard_NC24ads_A100_v4").memory_bandwidth_gbps == 1935
    assert catalog.machine("gcp", "a2-ultragpu-1g").memory_bandwidth_gbps == 2039


def test_parameters_from_the_architecture_match_the_weights_file(tmp_path: Path) -> None:
    # The tiny model written by serving.models: count its tensors' elements in the safetensors header.
    subprocess.run([sys.executable, "-m", "serving.models", "tiny", str(tmp_path)], check=True, capture_output=True)
    with (tmp_path / "model.safetensors").open("rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    stored = sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")
    config = json.loads((tmp_path / "config.json").read_text())
    assert modelsize.shape("tiny", config).parameters == stored == 123_456
    assert config == json.loads((modelsize.MODELS_DIR / "tiny.json").read_text())  # the catalog's copy is current


def test_a_stack_with_a_sized_model_gets_an_estimate_at_its_batch(stack_plan: Plan) -> None:
    plan = copy.deepcopy(stack_plan("aws-dev"))
    plan["config"]["servestack:model"]["name"] = "smollm2"
    plan["config"]["servestack:serving"] = {**plan["config"].get("servestack:serving", {}), "maxBatchSize": 8}
    result = for_plan(plan, estimate(plan).gpu_machine)
    assert not isinstance(result, str)
    assert (result.model, result.gpu_type, result.batched.batch) == ("smollm2", "nvidia-l4", 8)


def test_a_model_servestack_cannot_size_gets_no_estimate_and_says_why(stack_plan: Plan) -> None:
    plan = copy.deepcopy(stack_plan("aws-dev"))
    plan["config"]["servestack:model"]["name"] = "mistral-7b"
    assert for_plan(plan, estimate(plan).gpu_machine) == (
        "model mistral-7b: no config.json in infra/models/ (known: smollm2, tiny)")


def test_estimates_are_marked_and_never_mixed_with_a_measurement(stack_plan: Plan) -> None:
    plan = stack_plan("aws-dev")
    cost = estimate(plan)
    lat = for_plan(plan, cost.gpu_machine)
    assert not isinstance(lat, str)
    estimated = _cells(Row(cost, None, lat))
    speed, tpot, ttft, per_million = estimated[5:]
    assert speed.startswith("~") and speed.endswith("est. (batch 16)")
    assert tpot.startswith("~") and tpot.endswith(" est.") and ttft == "-"  # no TTFT is estimated
    assert per_million.startswith("~$") and per_million.endswith(" est.")
    measured = Row(cost, Measured("bench.json", 8, 2000.0, 125.0, 200.0, 1, 12.5))
    cells = _cells(measured)
    assert cells[5:] == ("2,000.0 (1 repl.)", "12.5", "125 / 200", "$0.046")
    assert not any("est." in cell or cell.startswith("~") for cell in cells)
    assert measured.to_dict()["estimate"] is None and measured.to_dict()["per_million_tokens_kind"] == "measured"
