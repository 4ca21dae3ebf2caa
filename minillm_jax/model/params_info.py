"""Parameter counts as reported to users: llm-baselines' count and the active count per token.

total   num_params: unique parameters, tied embedding once, minus wpe for GPT (get_num_params).
active  what one token uses: for every MoE sublayer only top_k of the n_experts experts' weights
        (kernels and biases), plus the router; equal to total for dense models. FLOPs per token
        count matmul weights instead (minillm_jax.train.mfu.matmul_params).
"""

from __future__ import annotations

import math
from typing import Any

from minillm_jax.model.transformer import ModelConfig, num_params


def expert_params(params: Any, cfg: ModelConfig) -> int:
    """All experts' weights (every MoE sublayer, all layers), router excluded."""
    if not cfg.has_moe:
        return 0
    import jax

    blocks = params["blocks"]
    total = 0
    for kind, name in cfg.sublayers:
        if kind != "moe":
            continue
        for key, sub in blocks[name].items():
            if key != "router":
                total += sum(math.prod(p.shape) for p in jax.tree.leaves(sub))
    return total


def active_params(params: Any, cfg: ModelConfig) -> int:
    """Parameters used per token (equal to num_params for dense models)."""
    total = num_params(params, cfg)
    if not cfg.has_moe:
        return total
    experts = expert_params(params, cfg)
    inactive = experts * (cfg.moe_n_experts - cfg.moe_top_k) // cfg.moe_n_experts
    return total - inactive


def describe(params: Any, cfg: ModelConfig) -> str:
    """'N parameters' for dense models, 'N parameters (M active per token, ...)' for MoE."""
    total = num_params(params, cfg)
    if not cfg.has_moe:
        return f"{total:,} parameters"
    return (f"{total:,} parameters ({active_params(params, cfg):,} active per token: top-"
            f"{cfg.moe_top_k} of {cfg.moe_n_experts} experts)")
