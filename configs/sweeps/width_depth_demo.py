"""A CPU-sized width-vs-depth sweep on the built-in Shakespeare corpus (configs/demo_2023.py's Llama):
three shapes of equal non-embedding size N = 12 * D^2 * L = 110,592, head size 24, SwiGLU hidden
size exactly 8D/3 (multiple_of=32), 80 steps of 8 x 64 tokens; each variant trains in about a
minute or less on 2 CPU cores.

    L1_d96 (4 heads)   L4_d48 (2 heads)   L16_d24 (1 head)

    python -m minillm_jax.sweep configs/sweeps/width_depth_demo.py
"""

from pathlib import Path

from minillm_jax.config import load_config

HEAD_DIM = 24
SHAPES = ((1, 96), (4, 48), (16, 24))  # (n_layer, n_embd), 12 * D^2 * L equal


def get_sweep() -> dict:
    base = load_config(Path(__file__).parent.parent / "demo_2023.py")
    base.multiple_of = 32  # SwiGLU hidden = 8D/3 exactly at these widths
    base.sequence_length = 64
    base.batch_size = 8
    base.iterations = 80
    base.eval_freq = 40
    base.eval_batches = 4
    base.final_full_eval = False
    base.log_freq = 10
    base.sample_tokens = 0
    variants = [{"name": f"L{n_layer}_d{n_embd}", "n_layer": n_layer, "n_embd": n_embd,
                 "n_head": n_embd // HEAD_DIM} for n_layer, n_embd in SHAPES]
    return {"base": base, "variants": variants}
