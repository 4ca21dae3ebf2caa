"""Which parts of the modern recipe help the demo? Leave-one-out on the modern recipe v1
(configs/demo_v1.py), tuned and measured on the shakespeare-dev split (37 training plays; 2 other
training plays held out), never on the validation plays. 3 seeds per variant, each 240 steps
(~3 min on 2 CPU cores).

    python -m minillm_jax.sweep configs/sweeps/ablation_demo_modern.py

The baseline is the full modern recipe, so each variant's paired difference is the effect of the
one option it removes (positive = the option helps); `demo_2023` is the whole 2023 recipe.
"""

from pathlib import Path

from minillm_jax.config import load_config

# Tuning runs train on 37 of the training plays and validate on 2 others (40 batches), never on
# the validation plays; no sample, no checkpoint, no final full evaluation.
DEV_SPLIT = dict(dataset="shakespeare-dev", data_dir="data/shakespeare-dev", eval_batches=40,
                 final_full_eval=False, sample_tokens=0, save_every_minutes=0.0)


def get_sweep() -> dict:
    # the recipe these ablations chose is v1 (configs/recipes/modern_v1.py); the demo then
    # trained 240 steps
    base = load_config(Path(__file__).parent.parent / "demo_v1.py")
    base.update(dict(DEV_SPLIT, eval_freq=120, iterations=240))
    variants = [
        {"name": "modern"},
        {"name": "demo_2023", "opt": "adamw", "lr": 5e-3, "tie_embeddings": True,
         "mlp_activation": "auto", "qk_norm": False, "scheduler": "cos", "final_div_factor": 0.1},
        {"name": "tied", "tie_embeddings": True},
        {"name": "no_qk_norm", "qk_norm": False},
        {"name": "cosine", "scheduler": "cos", "final_div_factor": 0.1},  # the 2023 schedule
    ]
    return {"base": base, "variants": variants, "baseline": "modern", "seeds": 3}
