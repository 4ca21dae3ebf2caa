"""Tune the AdamW-group lr of the modern recipe v2 on the CPU proxy (configs/proxy_modern.py), on
the shakespeare-dev split (never the validation plays), at the length
configs/sweeps/proxy_speedup_v2.py trains it for; the dev loss to beat is the 2023 recipe's
full-length 5.698 (configs/sweeps/proxy_lr.py, lr 2e-3). One seed each.

    python -m minillm_jax.sweep configs/sweeps/proxy_lr_v2.py
"""

from pathlib import Path

from minillm_jax.config import exec_python_file, load_config

HERE = Path(__file__).parent
DEV = exec_python_file(HERE / "proxy_lr.py", "sweep").DEV
STEPS_V2 = exec_python_file(HERE / "proxy_speedup_v2.py", "sweep").STEPS_V2


def get_sweep() -> dict:
    base = load_config(HERE.parent / "proxy_modern.py")
    base.update(dict(DEV, iterations=STEPS_V2))
    variants = [{"name": f"v2_lr{lr:g}", "lr": lr} for lr in (4e-3, 8e-3, 1.6e-2)]
    # Muon's lr halved too, as the demo's tuning chose (configs/sweeps/tune_demo_v2.py)
    variants += [{"name": f"v2_lr{lr:g}_muon_lr0.01", "lr": lr, "muon_lr": 0.01}
                 for lr in (8e-3, 1.6e-2)]
    return {"base": base, "variants": variants}
