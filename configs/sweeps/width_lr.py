"""Do the modern recipe's two learning rates transfer across width? On the shakespeare-dev split
(never the validation plays): configs/proxy_modern.py's recipe at 4 layers, sequence 128, batch 16,
60 steps (123k tokens, the same for every width), at widths 128 / 256 / 512 (head size 64).
Around the centre (muon_lr 0.02, lr 3e-3) one rate varies at a time: muon_lr 0.01 / 0.02 / 0.04
(Muon on the hidden matrices) and lr 1e-3 / 3e-3 / 1e-2 (AdamW on embeddings, head and norms),
5 runs per width, 2 seeds (seed-major: every seed-0 run first, so a cut-short sweep still has one
full seed).

    python -m minillm_jax.sweep configs/sweeps/width_lr.py
    python -m minillm_jax.experiments.lr_transfer runs/sweeps/width_lr   # plot + table

The ablation table it also writes compares every variant to d128_muon0.02 (the centre at width
128); the question here is
answered by lr_transfer.png / lr_transfer.md (best rate per width).
"""

from pathlib import Path

from minillm_jax.config import load_config

CONFIGS = Path(__file__).parent.parent
DEV = dict(dataset="shakespeare-dev", data_dir="data/shakespeare-dev", eval_freq=10_000,
           eval_batches=20, final_full_eval=False, save_every_minutes=0.0)
WIDTHS = (128, 256, 512)
HEAD_DIM = 64
MUON_LRS = (0.01, 0.02, 0.04)
ADAMW_LRS = (1e-3, 3e-3, 1e-2)
CENTRE = dict(muon_lr=0.02, lr=3e-3)


def get_sweep() -> dict:
    base = load_config(CONFIGS / "proxy_modern.py")
    base.update(DEV)
    base.update(CENTRE)
    base.n_layer = 4
    base.iterations = 60
    variants = []
    for width in WIDTHS:
        shape = {"n_embd": width, "n_head": width // HEAD_DIM}
        variants += [{"name": f"d{width}_muon{m:g}", **shape, "muon_lr": m} for m in MUON_LRS]
        variants += [{"name": f"d{width}_lr{lr:g}", **shape, "lr": lr}
                     for lr in ADAMW_LRS if lr != CENTRE["lr"]]
    return {"base": base, "variants": variants, "seeds": 2, "baseline": "d128_muon0.02"}
