"""Reduce-on-plateau as a scale that lives in the optimizer state.

Validation happens in the host loop every eval_freq steps, not inside the jitted train step, so
the plateau logic is split in two:

- `scale_by_plateau(...)` is a GradientTransformation placed last in the optimizer chain. Its
  state is optax.contrib's ReduceLROnPlateauState; its update only multiplies the updates by
  `state.scale` (1 until the first reduction). It never reads a loss, so the train step calls
  `tx.update(grads, opt_state, params)` as usual.
- `plateau_observe(cfg, opt_state, val_loss)` feeds one validation loss to every plateau state
  found in `opt_state` (optax.contrib.reduce_on_plateau's rule with accumulation_size=1, so
  patience counts evaluations) and returns the new opt_state; all other leaves are returned as
  they are (same arrays, no copy). The trainer calls it after each evaluation.

The lr applied at step t is `schedule(t) * lr_scale(opt_state)`; `current_lr` gives it for logging.
Rule (optax): an evaluation improves when loss < (1 - rtol) * best; after `patience` evaluations
in a row without improvement the scale is multiplied by `factor` (not below `min_scale`), the
count restarts, and `cooldown` further evaluations are ignored.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from optax.contrib import ReduceLROnPlateauState

from minillm_jax.config import OptimConfig

def _plateau_params(cfg: OptimConfig) -> tuple:
    return (float(cfg.plateau_factor), int(cfg.plateau_patience), float(cfg.plateau_rtol),
            int(cfg.plateau_cooldown), float(cfg.plateau_min_scale))


@functools.lru_cache(maxsize=None)
def _reduce_on_plateau(factor, patience, rtol, cooldown, min_scale):
    return optax.contrib.reduce_on_plateau(factor=factor, patience=patience, rtol=rtol,
                                           cooldown=cooldown, min_scale=min_scale,
                                           accumulation_size=1)


def scale_by_plateau(factor: float = 0.5, patience: int = 3, rtol: float = 1e-4,
                     cooldown: int = 0, min_scale: float = 0.01,
                     ) -> optax.GradientTransformation:
    """Multiplies updates by the plateau scale held in its state (see plateau_observe)."""
    rop = _reduce_on_plateau(factor, patience, rtol, cooldown, min_scale)

    def init_fn(params):
        state = rop.init(params)
        # float32 bookkeeping whatever the param dtype (bf16 "best loss" would be too coarse).
        return state._replace(scale=jnp.ones((), jnp.float32),
                              best_value=jnp.asarray(jnp.inf, jnp.float32),
                              avg_value=jnp.zeros((), jnp.float32))

    def update_fn(updates, state, params=None):
        del params
        updates = jax.tree.map(lambda u: (u * state.scale).astype(u.dtype), updates)
        return updates, state

    return optax.GradientTransformation(init_fn, update_fn)


def plateau_from_config(cfg: OptimConfig) -> optax.GradientTransformation:
    return scale_by_plateau(*_plateau_params(cfg))


def _is_plateau(x) -> bool:
    return isinstance(x, ReduceLROnPlateauState)


@functools.lru_cache(maxsize=None)
def _observe_fn(params: tuple):
    rop = _reduce_on_plateau(*params)

    @jax.jit
    def observe(state, value):
        _, new = rop.update({}, state, value=jnp.asarray(value, state.avg_value.dtype))
        return new

    return observe


def plateau_observe(cfg: OptimConfig, opt_state: Any, val_loss: Any) -> Any:
    """opt_state with every plateau state updated by one validation loss (host or device
    scalar). A no-op (returns opt_state itself) when the optimizer has no plateau scale."""
    observe = _observe_fn(_plateau_params(cfg))
    return jax.tree.map(lambda s: observe(s, val_loss) if _is_plateau(s) else s,
                        opt_state, is_leaf=_is_plateau)


def lr_scale(opt_state: Any) -> jax.Array:
    """The plateau scale in opt_state (1.0 without one). Jittable."""
    nodes = [s for s in jax.tree.leaves(opt_state, is_leaf=_is_plateau) if _is_plateau(s)]
    return nodes[0].scale if nodes else jnp.ones((), jnp.float32)


def current_lr(opt_state: Any, schedule: optax.Schedule, step: Any) -> jax.Array:
    """The lr applied at `step`: schedule(step) times the plateau scale. Jittable."""
    return jnp.asarray(schedule(step), jnp.float32) * lr_scale(opt_state)
