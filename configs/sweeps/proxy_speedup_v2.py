"""Target: the modern recipe v2 reaches the 2023 recipe's final val loss in <= 28% of its
wall-clock (stretch: 25%). On the CPU proxy (configs/proxy.py), the 2023 recipe trains its full
120 steps; v2 (configs/proxy_modern.py) is given STEPS_V2 of them, its schedule ending there
(chosen on the shakespeare-dev split: README "A modern recipe"). 3 seeds each, evaluated on the
held-out plays, run alone on the machine.

    python -m minillm_jax.sweep configs/sweeps/proxy_speedup_v2.py

ablation.md then gives each recipe's final val loss (mean ± std), the paired difference and the
training time each needs to reach the 2023 recipe's mean final loss.
"""

from pathlib import Path

from minillm_jax.config import exec_python_file

STEPS_V2 = 24  # 20% of the 2023 recipe's 120


def get_sweep() -> dict:
    speedup = exec_python_file(Path(__file__).with_name("proxy_speedup.py"), "sweep")
    return speedup.speedup_sweep("proxy_modern.py", f"modern_v2_{STEPS_V2}_steps", STEPS_V2)
