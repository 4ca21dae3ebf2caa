"""Mixture of experts: the winning Llama (configs/best.py, 18 x 768) with every MLP replaced by 8
SwiGLU experts of half the hidden size (1024), top-2 routed.

Two half-size experts per token cost the same FLOPs as the dense 2048-wide MLP, so this is a
compute-matched MoE: active parameters per token stay ~166M (plus the routers) while the total
grows to ~421M. Capacity factor 1.25 with token dropping (sequence order within each sequence;
minillm_jax/model/moe.py), load-balancing loss weight 0.01 and router z-loss weight 0.001 (added to the
training loss; the logged train "loss" is the plain cross entropy). Evaluations log moe_aux_loss
(1.0 = uniform routing), moe_z_loss, moe_dropped_frac and moe_load_e0..e7.

    python -m minillm_jax.main --config configs/moe.py
    python -m minillm_jax.main --config configs/moe.py --config.moe_capacity_factor=0   # dropless
    python tools/bench.py --config configs/moe.py --config.batch_size=8

Switch-style variant: --config.moe_top_k=1 --config.moe_hidden=0 (each expert as wide as the dense
MLP; same active size as best.py, 8x the MLP parameters).
"""

from pathlib import Path

from minillm_jax.config import load_config


def get_config():
    config = load_config(Path(__file__).with_name("best.py"))
    config.block_pattern = "attn,moe"
    config.moe_n_experts = 8
    config.moe_top_k = 2
    config.moe_hidden = 1024
    config.moe_capacity_factor = 1.25
    config.moe_impl = "auto"
    config.moe_priority = "token"
    config.moe_group_size = 0  # one sequence per routing group
    config.moe_aux_loss_weight = 0.01
    config.moe_z_loss_weight = 0.001
    config.remat = "none"  # save_named names no MoE activation: it would recompute the experts
    return config
