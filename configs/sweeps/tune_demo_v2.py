"""The learning rates (and the strengths of v2's new options) of the modern recipe v2 on the demo,
re-tuned on the shakespeare-dev split around v1's values (lr 2e-2, muon_lr 0.02): one setting
changed at a time, paired by seed, then the two best together. configs/demo.py took the result.

    python -m minillm_jax.sweep configs/sweeps/tune_demo_v2.py --seeds 2
"""

from pathlib import Path

from minillm_jax.config import exec_python_file, load_config

HERE = Path(__file__).parent
DEV_SPLIT = exec_python_file(HERE / "ablation_demo_modern.py", "sweep").DEV_SPLIT


def get_sweep() -> dict:
    base = load_config(HERE.parent / "demo.py")
    base.update(dict(DEV_SPLIT, eval_freq=105, lr=2e-2, muon_lr=0.02))  # v1's rates
    variants = [
        {"name": "v2"},
        {"name": "lr_1e-2", "lr": 1e-2},  # AdamW group (embeddings, head, norms, gates): 2e-2
        {"name": "lr_4e-2", "lr": 4e-2},
        {"name": "lr_8e-2", "lr": 8e-2},
        {"name": "muon_lr_0.01", "muon_lr": 0.01},  # Muon group: 0.02
        {"name": "muon_lr_0.04", "muon_lr": 0.04},
        {"name": "muon_wd_1", "muon_weight_decay": 1.0},  # 0.5
        # the two best single changes together
        {"name": "lr_4e-2_muon_lr_0.01", "lr": 4e-2, "muon_lr": 0.01},
        {"name": "window_16", "attention_window": 16},  # 32
        {"name": "window_64", "attention_window": 64},
    ]
    return {"base": base, "variants": variants, "baseline": "v2", "seeds": 2}
