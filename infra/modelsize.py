"""How big a served model is on a GPU: its weights and the key-value cache of its sequences.

Read from the model's Hugging Face `config.json`: the parameter count is computed from the architecture
fields (embeddings, attention and MLP projections, norms), the cache from the layers, key-value heads and
head size. The configs of the models servestack knows live in `infra/models/<name>.json` (the bundled
`tiny` and `smollm2`, as `python -m serving.models` writes them); drop another model's config.json there to
have it checked and estimated too.

One place for this arithmetic: config validation (does the model fit its GPU?) and `servestack compare`'s
latency estimate both use it. The Pulumi program imports it, so it imports nothing of `serving`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

MODELS_DIR = Path(__file__).resolve().parent / "models"
GIB = 2**30

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# serving/engine.py (choose_device) loads every model in bfloat16 on a CUDA GPU, whatever dtype its files hold.
GPU_DTYPE = "bfloat16"
# Room left on the GPU beyond weights and cache: the CUDA context, activations, the allocator's slack.
FIT_HEADROOM = 0.10
# The architectures whose parameter count this module computes (decoder-only, Llama-like blocks).
ARCHITECTURES = ("llama", "mistral", "qwen2", "glm")


class ModelSizeError(ValueError):
    pass


@dataclass(frozen=True)
class ModelShape:
    name: str
    model_type: str
    parameters: int
    layers: int
    kv_heads: int
    head_dim: int
    max_model_len: int  # max_position_embeddings: the longest sequence the server admits (engine.context_length)

    def weight_bytes(self, dtype: str = GPU_DTYPE) -> int:
        return self.parameters * DTYPE_BYTES[dtype]

    def kv_bytes_per_token(self, dtype: str = GPU_DTYPE) -> int:
        """Keys and values of one token in every layer."""
        return 2 * self.layers * self.kv_heads * self.head_dim * DTYPE_BYTES[dtype]

    def kv_cache_bytes(self, batch: int, tokens: int | None = None, dtype: str = GPU_DTYPE) -> int:
        """The cache of `batch` sequences of `tokens` each (by default the full context)."""
        return batch * (self.max_model_len if tokens is None else tokens) * self.kv_bytes_per_token(dtype)


def _field(config: Mapping[str, Any], key: str, name: str) -> int:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ModelSizeError(f"model {name}: config.json field {key!r} is {value!r}; expected a whole number > 0")
    return value


def shape(name: str, config: Mapping[str, Any]) -> ModelShape:
    """The model's shape from its config.json (see the module docstring)."""
    config = config.get("text_config") or config  # multimodal configs nest the decoder's
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ModelSizeError(f"model {name}: config.json model_type {model_type!r} is not one servestack can size; "
                             f"known: {', '.join(ARCHITECTURES)}")
    vocab = _field(config, "vocab_size", name)
    hidden = _field(config, "hidden_size", name)
    layers = _field(config, "num_hidden_layers", name)
    heads = _field(config, "num_attention_heads", name)
    kv_heads = _field(config, "num_key_value_heads", name) if "num_key_value_heads" in config else heads
    head_dim = _field(config, "head_dim", name) if config.get("head_dim") else hidden // heads
    intermediate = _field(config, "intermediate_size", name)

    q, kv = heads * head_dim, kv_heads * head_dim
    # q, k and v carry biases in Qwen2 always, in the others when attention_bias is set; only Llama's o_proj
    # follows attention_bias too.
    qkv_bias = model_type == "qwen2" or bool(config.get("attention_bias"))
    o_bias = model_type == "llama" and bool(config.get("attention_bias"))
    attention = hidden * q + 2 * hidden * kv + q * hidden + (q + 2 * kv if qkv_bias else 0) + (hidden if o_bias else 0)
    mlp = 3 * hidden * intermediate + (2 * intermediate + hidden if config.get("mlp_bias") else 0)  # gate, up, down
    per_layer = attention + mlp + 2 * hidden  # two RMS norms
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings", False) else 2)  # lm_head tied or not
    parameters = embeddings + layers * per_layer + hidden  # the final norm
    max_len = _field(config, "max_position_embeddings", name)
    return ModelShape(name, str(model_type), parameters, layers, kv_heads, head_dim, max_len)


def known(name: str) -> ModelShape | None:
    """The shape of a model whose config.json is in infra/models/, or None when servestack has none."""
    return _shape_in(MODELS_DIR / f"{name}.json")


@cache  # parse_config and the latency estimate both ask, for every stack
def _shape_in(path: Path) -> ModelShape | None:
    if not path.is_file():
        return None
    return shape(path.stem, json.loads(path.read_text()))


def known_names() -> list[str]:
    return sorted(p.stem for p in MODELS_DIR.glob("*.json"))


def needed_bytes(model: ModelShape, batch: int) -> int:
    """What serving `batch` sequences at full context takes on one GPU, headroom included."""
    return round((model.weight_bytes() + model.kv_cache_bytes(batch)) * (1 + FIT_HEADROOM))
