"""Parameter counts as reported to users: llm-baselines' count and the active count per token."""

from __future__ import annotations

from typing import Any

from minillm_jax.model import ModelConfig, num_params


def active_params(params: Any, cfg: ModelConfig) -> int:
    """Parameters used per token (equal to num_params for dense models)."""
    return num_params(params, cfg)
