"""A CPU-sized optimizer ablation on configs/demo_2023.py (the demo model, 2023 recipe): AdamW
(the baseline) against Muon, 3 seeds each (seed/data_seed + k), 6 runs of a few minutes on 2 CPU cores.

    python -m minillm_jax.sweep configs/sweeps/ablation_demo_optimizer.py

writes runs/sweeps/ablation_demo_optimizer/{adamw,muon}/seed{0,1,2}/ and there ablation.md
(final val loss mean ± std, the paired Muon - AdamW difference with its 95% CI, the time to reach
AdamW's final loss), ablation.csv, summary.csv and the val-loss plots vs wall-clock and FLOPs.
Add --seeds N for more seeds, --budget-minutes M to give every run the same wall-clock budget,
--dry-run to check the configs without training.
"""

from pathlib import Path

from minillm_jax.config import load_config


def get_sweep() -> dict:
    base = load_config(Path(__file__).parent.parent / "demo_2023.py")
    # muon: Muon (muon_lr, configs/base.py) on the hidden matrices, AdamW (lr) on the rest
    variants = [{"name": "adamw", "opt": "adamw"}, {"name": "muon", "opt": "muon"}]
    return {"base": base, "variants": variants, "baseline": "adamw", "seeds": 3}
