"""Which speedrun techniques help the demo on top of the modern recipe v1? Add-one ablation on
configs/demo_v1.py (the demo model, 210 steps of 8 x 128 tokens), tuned and measured on the
shakespeare-dev split (37 training plays train, 2 other training plays validate), never on the
validation plays. 3 seeds per variant, paired by seed (seed / data_seed + k).

    python -m minillm_jax.sweep configs/sweeps/ablation_demo_v2.py

The baseline is v1, so each variant's paired difference is the effect of the one option it adds
(negative = lower loss = the option helps).
"""

from pathlib import Path

from minillm_jax.config import exec_python_file, load_config

HERE = Path(__file__).parent
DEV_SPLIT = exec_python_file(HERE / "ablation_demo_modern.py", "sweep").DEV_SPLIT
V2 = exec_python_file(HERE.parent / "recipes" / "modern.py", "config")
V2_ADDED = {k: v for k, v in V2.OPTIONS.items() if k not in V2.V1}


def get_sweep() -> dict:
    base = load_config(HERE.parent / "demo_v1.py")
    base.update(dict(DEV_SPLIT, eval_freq=105))
    variants = [
        {"name": "v1"},
        {"name": "polar_express", "muon_ns_coefficients": "polar_express"},
        {"name": "normuon", "muon_normuon": True},
        # weight decay on the Muon group (v1 has none there), plain and cautious
        {"name": "muon_wd", "muon_weight_decay": 0.5},
        {"name": "muon_wd_cautious", "muon_weight_decay": 0.5, "cautious_weight_decay": True},
        {"name": "value_embeddings", "value_embeddings": 2},  # layers 0, 1 and 2, 3
        {"name": "smear", "smear": True},
        {"name": "unet_skips", "unet_skips": True},
        # sliding windows of 32 of the 128 tokens in layers 0 and 2, full attention in 1 and 3
        {"name": "window_alternate", "attention_window": 32, "attention_window_layers": "alternate"},
        # v2: the options above that helped, together (configs/recipes/modern.py)
        {"name": "v2", **V2_ADDED},
    ]
    return {"base": base, "variants": variants, "baseline": "v1", "seeds": 3}
