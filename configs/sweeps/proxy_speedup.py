"""Target: the modern recipe (v1) reaches the 2023 recipe's final val loss in <= 40% of its
wall-clock. On the CPU proxy (configs/proxy.py), the 2023 recipe trains its full 120 steps; the modern recipe
(configs/proxy_modern_v1.py) is given 25% of them (30 steps, its schedule ending there). A modern
step costs 1.06-1.12x a 2023 step (tools/bench.py, alternating; Muon's Newton-Schulz iterations
at this small batch, and the untied head's update); with the run's fixed costs 25% of the steps
took 34.6% of the wall-clock (README "A modern recipe", 3 seeds). 3 seeds each,
evaluated on the held-out plays, after both lrs were picked by configs/sweeps/proxy_lr.py on the
shakespeare-dev split.

    python -m minillm_jax.sweep configs/sweeps/proxy_speedup.py

ablation.md then gives each recipe's final val loss (mean ± std), the paired difference and the
time each needs to reach the 2023 recipe's mean final loss.
"""

from pathlib import Path

from minillm_jax.config import load_config

CONFIGS = Path(__file__).parent.parent


def speedup_sweep(modern_config: str, name: str, steps: int) -> dict:
    """The 2023 recipe (configs/proxy.py, its 120 steps) against `modern_config` given `steps`
    steps, 3 seeds each, evaluated on the validation plays at the end only."""
    baseline = load_config(CONFIGS / "proxy.py")
    modern = load_config(CONFIGS / modern_config)
    modern_fields = {k: v for k, v in modern.items() if baseline[k] != v}
    base = baseline.copy_and_resolve_references()
    base.save_every_minutes = 0.0
    variants = [{"name": "recipe_2023"},
                {"name": name, **modern_fields, "iterations": steps}]
    return {"base": base, "variants": variants, "baseline": "recipe_2023", "seeds": 3}


def get_sweep() -> dict:
    # the modern recipe v1 (configs/recipes/modern_v1.py), given 25% of the steps
    return speedup_sweep("proxy_modern_v1.py", "modern_25pct_steps",
                         load_config(CONFIGS / "proxy.py").iterations // 4)
