"""Width vs depth at equal non-embedding size N = 12 * D^2 * L (attention 4D^2 + MLP 8D^2 per layer).

The team compared models of the winning size (configs/best.py: Llama, L=18, D=768, N = 127.4M
non-embedding parameters, 166M with the tied embedding) at other aspect ratios. All four shapes
have exactly N = 127,401,984 (the SwiGLU hidden size 8D/3 is a multiple of 256 for each), head
size 64, and everything else from best.py (same batch, tokens and schedule):

    L8_d1152 (18 heads)   L18_d768 (12, = best.py)   L32_d576 (9)   L72_d384 (6)

    python -m minillm_jax.sweep configs/sweeps/width_depth.py
"""

from pathlib import Path

from minillm_jax.config import load_config

HEAD_DIM = 64
SHAPES = ((8, 1152), (18, 768), (32, 576), (72, 384))  # (n_layer, n_embd), 12 * D^2 * L equal


def get_sweep() -> dict:
    base = load_config(Path(__file__).parent.parent / "best.py")
    variants = [{"name": f"L{n_layer}_d{n_embd}", "n_layer": n_layer, "n_embd": n_embd,
                 "n_head": n_embd // HEAD_DIM} for n_layer, n_embd in SHAPES]
    return {"base": base, "variants": variants}
