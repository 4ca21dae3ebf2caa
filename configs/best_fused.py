"""configs/best.py for GPUs with cuDNN fused (flash) attention: bfloat16 matmuls (compute_dtype=auto
on a GPU), residual and embedding dropout 0.05 as in the recipe, but no dropout on the attention
probabilities.

    python -m minillm_jax.main --config configs/best_fused.py

Why a sibling: llm-baselines applies `dropout` to the attention probabilities too, and no fused
attention kernel offers that, so configs/best.py trains attention on the rematerialised XLA path
(the (B, H, T, T) probabilities are recomputed in the backward pass rather than stored). This
config trades that one regulariser for the fused kernel; README "Mixed precision and kernels"
gives the measured speed of both.
"""

from pathlib import Path

from minillm_jax.config import load_config


def get_config():
    config = load_config(Path(__file__).with_name("best.py"))
    config.attention_dropout = 0.0
    return config
