"""Brainformer (Zhou et al., 2023): blocks built from a sequence of sublayers, here the published
pattern attention -> MoE -> MLP -> MoE -> MLP -> MoE, each pre-normed with a residual
(x = x + sublayer(norm(x))), stacked and scanned like the plain blocks.

Llama-style (RMSNorm, RoPE, SwiGLU), 768 wide, 6 blocks (6 attention + 12 dense/MoE feed-forward
sublayers, against best.py's 18 + 18): 8 experts of hidden size 1024 per MoE sublayer, top-2
routed, dense MLPs at the usual 2048. About 195M active parameters per token, 450M in total.

    python -m minillm_jax.main --config configs/brainformer.py
    python tools/bench.py --config configs/brainformer.py --config.batch_size=8

Change the pattern with e.g. --config.block_pattern=attn,moe,mlp (kinds: attn, mlp, moe).
"""

from pathlib import Path

from minillm_jax.config import load_config


def get_config():
    config = load_config(Path(__file__).with_name("best.py"))
    config.n_layer = 6
    config.block_pattern = "attn,moe,mlp,moe,mlp,moe"
    config.moe_n_experts = 8
    config.moe_top_k = 2
    config.moe_hidden = 1024
    config.moe_capacity_factor = 1.25
    config.moe_aux_loss_weight = 0.01
    config.moe_z_loss_weight = 0.001
    config.remat = "none"  # save_named names no MoE activation: it would recompute the experts
    return config
