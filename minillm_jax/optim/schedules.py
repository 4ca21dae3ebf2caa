"""Learning-rate schedules as optax schedules (step -> lr), selected by config.scheduler.

Every schedule takes its length (`total_steps`, the horizon) as a number or as a traced scalar:
the train step receives the horizon as an argument, so the time budget can move it without a
recompile (minillm_jax/train/budget.py). Hence closed forms in jnp rather than optax's piecewise
helpers, whose boundaries must be Python numbers.

`cos` and `linear` are torch's OneCycleLR exactly as llm-baselines configures it
(docs/llm-baselines.md#learning-rate-schedule): warm-up from lr/div_factor to lr, then anneal to
lr/div_factor/final_div_factor, both phases with the same shape (the warm-up is cosine-shaped
too). optax.cosine_onecycle_schedule differs (its warm-up boundaries are not torch's `pct*N - 1`
/ `N - 1`), hence this closed form.

The other schedules (minillm_jax/optim/README.md) share OneCycle's end points so that runs compare
like with like: warm-up (linear) from `lr/div_factor` over `round(warmup_percent*iterations)` steps,
peak `lr`, minimum `lr/div_factor/final_div_factor` (lr/10 with the defaults).

- `sgdr`: cosine warm restarts (as optax.sgdr_schedule). Cycle k lasts round(T0 * mult^k) steps,
  T0 = sgdr_first_cycle (a fraction of iterations when < 1, else steps); its peak is
  lr * sgdr_peak_decay^k; the warm-up is part of the first cycle. The cycle that would run past
  `iterations` is cut to end there, so every run finishes at the minimum.
- `wsd`: warm-up, stable at lr, then the last round(wsd_decay_frac*iterations) steps decay to the
  minimum with shape wsd_decay_shape (linear | cosine | 1-sqrt); the last step is at the minimum.
- `plateau`: a constant lr with the reduce-on-plateau scale on top (minillm_jax/optim/plateau.py);
  `plateau=True` puts the same scale on top of any other schedule.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import optax

from minillm_jax.config import MAX_SGDR_CYCLES, WSD_SHAPES, OptimConfig


Steps = Any  # a Python int or a traced int32 scalar


def _anneal(kind: str, start, end, pct):
    if kind == "cos":
        return end + (start - end) * (1.0 + jnp.cos(jnp.pi * pct)) / 2.0
    return start + (end - start) * pct


def onecycle(peak_lr: float, total_steps: Steps, pct_start: float, kind: str = "cos",
             div_factor: float = 100.0, final_div_factor: float = 0.1) -> optax.Schedule:
    """torch OneCycleLR(max_lr, total_steps, pct_start, anneal_strategy=kind, div_factor,
    final_div_factor) evaluated at the 0-based optimizer step.

    torch (so llm-baselines) raises ZeroDivisionError when pct_start*total_steps == 1 exactly (a
    zero-length warm-up phase); here that warm-up is skipped and the schedule starts at the peak.
    With pct_start*total_steps < 1 torch has no warm-up step either and anneals from
    (t - e1)/(N - 1 - e1) with e1 = pct*N - 1 < 0 (lr[0] slightly below the peak): matched here.
    """
    initial = peak_lr / div_factor
    final = initial / final_div_factor
    total = jnp.asarray(total_steps, jnp.float32)
    warm_end = pct_start * total - 1.0
    last = total - 1.0

    def schedule(step):
        t = jnp.minimum(jnp.asarray(step, jnp.float32), last)
        decay = _anneal(kind, peak_lr, final, (t - warm_end) / jnp.maximum(last - warm_end, 1.0))
        warm = _anneal(kind, initial, peak_lr, t / jnp.maximum(warm_end, 1e-9))
        return jnp.where((warm_end > 0) & (t <= warm_end), warm, decay)

    return schedule


def sgdr(peak_lr: float, total_steps: Steps, first_cycle: float, cycle_mult: float = 1.0,
         peak_decay: float = 1.0, warmup_steps: Steps = 0, init_lr: float = 0.0,
         min_lr: float = 0.0) -> optax.Schedule:
    """Cosine annealing with warm restarts (Loshchilov & Hutter 2017), optax.sgdr_schedule's
    formula with the cycles of `sgdr_cycles` computed in jnp.

    Cycle k runs from peak_lr*peak_decay^k down to min(min_lr, that peak); the first cycle starts
    with a linear warm-up from init_lr over warmup_steps (counted inside the first cycle).
    Checked by minillm_jax.config for the run's iterations: at most MAX_SGDR_CYCLES cycles, and
    a warm-up shorter than the first cycle.
    """
    total = jnp.asarray(total_steps, jnp.float32)
    t0 = first_cycle * total if first_cycle < 1 else jnp.float32(first_cycle)
    k = jnp.arange(MAX_SGDR_CYCLES, dtype=jnp.float32)
    lengths = jnp.maximum(1.0, jnp.round(t0 * cycle_mult ** k))
    starts = jnp.cumsum(lengths) - lengths
    lengths = jnp.clip(total - starts, 1.0, lengths)  # the cycle running past the end is cut
    warmup = jnp.asarray(warmup_steps, jnp.float32)

    def schedule(step):
        t = jnp.asarray(step, jnp.float32)
        cycle = jnp.clip(jnp.searchsorted(starts, t, side="right") - 1, 0, MAX_SGDR_CYCLES - 1)
        tau, length = t - starts[cycle], lengths[cycle]
        peak = peak_lr * peak_decay ** cycle.astype(jnp.float32)
        end = jnp.minimum(min_lr, peak)
        w = jnp.where(cycle == 0, warmup, 0.0)
        warm = init_lr + (peak - init_lr) * tau / jnp.maximum(w, 1.0)
        p = jnp.clip(tau - w, 0.0, length - w) / jnp.maximum(length - w, 1.0)
        cosine = end + (peak - end) * (1.0 + jnp.cos(jnp.pi * p)) / 2.0
        return jnp.where(tau < w, warm, cosine)

    return schedule


def wsd(peak_lr: float, total_steps: Steps, warmup_steps: Steps, decay_steps: Steps,
        shape: str = "1-sqrt", init_lr: float = 0.0, min_lr: float = 0.0) -> optax.Schedule:
    """Warmup-stable-decay (a.k.a. trapezoidal): linear warm-up from init_lr over warmup_steps,
    peak_lr until the decay, then `decay_steps` steps annealing to min_lr (reached at the last
    step total_steps-1). Decay progress p = (t - s + 1)/decay_steps, s = total_steps-decay_steps:
    linear  lr = peak + (min - peak) p
    cosine  lr = min + (peak - min) (1 + cos(pi p)) / 2
    1-sqrt  lr = min + (peak - min) (1 - sqrt(p))      (Hägele et al. 2024)
    """
    if shape not in WSD_SHAPES:
        raise ValueError(f"wsd_decay_shape={shape!r} is unknown: use one of {WSD_SHAPES}")
    total = jnp.asarray(total_steps, jnp.float32)
    warmup = jnp.asarray(warmup_steps, jnp.float32)
    decay_steps = jnp.asarray(decay_steps, jnp.float32)
    decay_start = total - decay_steps

    def schedule(step):
        t = jnp.asarray(step, jnp.float32)
        p = jnp.clip((t - decay_start + 1.0) / jnp.maximum(decay_steps, 1.0), 0.0, 1.0)
        if shape == "linear":
            frac = 1.0 - p
        elif shape == "cosine":
            frac = (1.0 + jnp.cos(jnp.pi * p)) / 2.0
        else:
            frac = 1.0 - jnp.sqrt(p)
        warm = init_lr + (peak_lr - init_lr) * t / jnp.maximum(warmup, 1.0)
        lr = jnp.where(t < warmup, warm, peak_lr)
        return jnp.where((t >= decay_start) & (decay_steps > 0),
                         min_lr + (peak_lr - min_lr) * frac, lr)

    return schedule


def build_schedule(cfg: OptimConfig, iterations: Steps) -> optax.Schedule:
    """The base lr schedule named by cfg.scheduler over a run of `iterations` steps (a number or a
    traced scalar; the plateau scale, if any, is applied on top by the optimizer: see
    minillm_jax.optim.plateau.current_lr)."""
    name = cfg.scheduler
    initial = cfg.lr / cfg.div_factor
    final = initial / cfg.final_div_factor
    n = jnp.asarray(iterations, jnp.float32)
    warmup = jnp.round(cfg.warmup_percent * n)
    if name in ("cos", "linear"):
        return onecycle(cfg.lr, iterations, cfg.warmup_percent, name, cfg.div_factor,
                        cfg.final_div_factor)
    if name in ("constant", "plateau"):
        return optax.constant_schedule(cfg.lr)
    if name == "sgdr":
        return sgdr(cfg.lr, iterations, cfg.sgdr_first_cycle, cfg.sgdr_cycle_mult,
                    cfg.sgdr_peak_decay, warmup_steps=warmup, init_lr=initial, min_lr=final)
    if name == "wsd":
        decay = jnp.round(cfg.wsd_decay_frac * n)
        return wsd(cfg.lr, iterations, warmup, decay, cfg.wsd_decay_shape, init_lr=initial,
                   min_lr=final)
    raise ValueError(f"scheduler {name!r} is unknown")  # OptimConfig admits only known names
