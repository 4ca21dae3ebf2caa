"""Learning-rate schedules as optax schedules (step -> lr).

`cos` and `linear` are torch's OneCycleLR exactly as llm-baselines configures it (REFERENCE §6):
warm-up from lr/div_factor to lr, then anneal to lr/div_factor/final_div_factor, both phases with
the same shape (the warm-up is cosine-shaped too). optax.cosine_onecycle_schedule differs (its
warm-up boundaries are not torch's `pct*N - 1` / `N - 1`), hence this closed form.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import optax

# Extra schedule names beyond cos | linear | constant; extended by later schedule families.
SCHEDULE_NAMES: tuple[str, ...] = ()


def _anneal(kind: str, start, end, pct):
    if kind == "cos":
        return end + (start - end) * (1.0 + jnp.cos(jnp.pi * pct)) / 2.0
    return start + (end - start) * pct


def onecycle(peak_lr: float, total_steps: int, pct_start: float, kind: str = "cos",
             div_factor: float = 100.0, final_div_factor: float = 0.1) -> optax.Schedule:
    """torch OneCycleLR(max_lr, total_steps, pct_start, anneal_strategy=kind, div_factor,
    final_div_factor) evaluated at the 0-based optimizer step.

    llm-baselines crashes when pct_start*total_steps <= 1 (a zero-length warm-up divides by zero);
    here such a warm-up is skipped and the schedule starts at the peak.
    """
    initial = peak_lr / div_factor
    final = initial / final_div_factor
    warm_end = float(pct_start * total_steps) - 1.0
    last = float(total_steps - 1)

    def schedule(step):
        t = jnp.minimum(jnp.asarray(step, jnp.float32), last)
        if warm_end <= 0:
            return _anneal(kind, peak_lr, final, t / max(last, 1.0))
        warm = _anneal(kind, initial, peak_lr, t / warm_end)
        decay = _anneal(kind, peak_lr, final, (t - warm_end) / max(last - warm_end, 1.0))
        return jnp.where(t <= warm_end, warm, decay)

    return schedule


def build_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """The lr schedule named by config.scheduler."""
    name = config.scheduler
    if name in ("cos", "linear"):
        return onecycle(config.lr, config.iterations, config.warmup_percent, name,
                        config.div_factor, config.final_div_factor)
    if name in ("constant", "none"):
        return optax.constant_schedule(config.lr)
    raise ValueError(f"config.scheduler={name!r} is unknown")
