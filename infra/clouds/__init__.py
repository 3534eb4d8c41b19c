"""One module per cloud; each turns the stack's config into a cluster and returns a Platform."""

from __future__ import annotations

import importlib

from infra.config import StackConfig
from infra.platform import Platform


def build_platform(config: StackConfig) -> Platform:
    # Imported on demand: a stack pays only for its own cloud's SDK (pulumi-azure-native is large).
    module = importlib.import_module(f"infra.clouds.{config.cloud}")
    platform: Platform = module.build(config)
    return platform
