"""The team's scaling study: the winning recipe (configs/best.py: Llama, 768 wide, 12 heads) at
6, 8, 12, 18 and 24 layers; everything else (batch, sequence, schedule, iterations) as in best.py.

    L6_d768 (81.1M params)  L8_d768 (95.3M)  L12_d768 (123.6M)  L18_d768 (166.1M, = best.py)
    L24_d768 (208.5M, = the organisers' 24-layer baseline size)

    python -m minillm_jax.sweep configs/sweeps/scaling.py
"""

from pathlib import Path

from minillm_jax.config import load_config

N_EMBD, N_HEAD = 768, 12
DEPTHS = (6, 8, 12, 18, 24)


def get_sweep() -> dict:
    base = load_config(Path(__file__).parent.parent / "best.py")
    variants = [{"name": f"L{n_layer}_d{N_EMBD}", "n_layer": n_layer, "n_embd": N_EMBD,
                 "n_head": N_HEAD} for n_layer in DEPTHS]
    return {"base": base, "variants": variants}
