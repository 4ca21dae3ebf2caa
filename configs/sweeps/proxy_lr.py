"""Tune the lr of both recipes on the CPU proxy, on the shakespeare-dev split (never on the
validation plays): the 2023 recipe (configs/proxy.py, full length) and the modern recipe v1
(configs/proxy_modern_v1.py) at 40% of the proxy's steps, the length configs/sweeps/proxy_speedup.py
trains it for. One seed each.

    python -m minillm_jax.sweep configs/sweeps/proxy_lr.py
"""

from pathlib import Path

from minillm_jax.config import load_config

CONFIGS = Path(__file__).parent.parent
DEV = dict(dataset="shakespeare-dev", data_dir="data/shakespeare-dev", eval_freq=10_000,
           eval_batches=20, final_full_eval=False, save_every_minutes=0.0)


def get_sweep() -> dict:
    baseline = load_config(CONFIGS / "proxy.py")
    modern = load_config(CONFIGS / "proxy_modern_v1.py")
    base = baseline.copy_and_resolve_references()
    base.update(DEV)
    modern_fields = {k: v for k, v in modern.items() if baseline[k] != v}
    short = int(0.4 * baseline.iterations)
    variants = [{"name": f"2023_lr{lr:g}", "lr": lr} for lr in (1e-3, 2e-3, 4e-3, 8e-3)]
    variants += [{"name": f"modern_lr{lr:g}", **modern_fields, "iterations": short, "lr": lr}
                 for lr in (4e-3, 1e-2)]
    return {"base": base, "variants": variants}
