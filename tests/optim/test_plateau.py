"""Reduce-on-plateau: the scale in opt_state, updated by plateau_observe after evaluations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minillm_jax.config import ConfigError
from minillm_jax.optim import current_lr, lr_scale, plateau_observe
from tests.optim.helpers import fast_jit, opt_config, optim_config, optimizer

PARAMS = {"dense": {"kernel": jnp.ones((4, 4))}, "ln": {"scale": jnp.ones((4,))}}
GRADS = jax.tree.map(lambda p: 0.1 * p, PARAMS)


def scales_after(config, losses):
    tx, _ = optimizer(config)
    state = tx.init(PARAMS)
    out = []
    for loss in losses:
        state = plateau_observe(optim_config(config), state, loss)
        out.append(float(lr_scale(state)))
    return out


def test_reduces_after_patience_flat_evals_only():
    config = opt_config(plateau=True, plateau_patience=2, plateau_factor=0.5,
                        plateau_min_scale=0.2)
    # improving, improving, flat, flat -> x0.5, flat, flat -> x0.5, flat, flat -> floor 0.2
    losses = [3.0, 2.9, 2.9, 2.95, 2.9, 2.9, 2.9, 2.9]
    assert scales_after(config, losses) == pytest.approx(
        [1, 1, 1, 0.5, 0.5, 0.25, 0.25, 0.2])
    # Always improving (by more than rtol): never reduced.
    assert scales_after(config, list(np.linspace(3.0, 2.0, 8))) == [1.0] * 8
    # One flat evaluation between improvements resets the count.
    assert scales_after(config, [3.0, 3.0, 2.5, 2.5, 2.0, 2.0]) == [1.0] * 6


def test_scale_multiplies_updates_and_current_lr():
    config = opt_config(plateau=True, plateau_patience=1, plateau_factor=0.5, scheduler="cos",
                        grad_clip=1.0)
    tx, schedule = optimizer(config)
    update = fast_jit(tx.update)
    state = tx.init(PARAMS)
    full, _ = update(GRADS, state, PARAMS)
    state = plateau_observe(optim_config(config), plateau_observe(optim_config(config), state, 1.0), 1.0)
    half, _ = update(GRADS, state, PARAMS)
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(half)):
        np.testing.assert_allclose(b, 0.5 * a, rtol=1e-6)
    step = jnp.asarray(7)
    assert float(jax.jit(current_lr, static_argnums=1)(state, schedule, step)) == pytest.approx(
        0.5 * float(schedule(step)), rel=1e-6)


def test_scheduler_plateau_is_constant_base_and_observe_is_noop_without_plateau():
    config = opt_config(scheduler="plateau", plateau_patience=1)
    tx, schedule = optimizer(config)
    assert float(schedule(0)) == float(schedule(1000)) == pytest.approx(config.lr)
    assert scales_after(config, [2.0, 2.0]) == [1.0, 0.5]

    plain = opt_config()
    tx, schedule = optimizer(plain)
    state = tx.init(PARAMS)
    plain_optim = optim_config(plain)
    assert plateau_observe(plain_optim, state, 1.0) is not None
    assert all(a is b for a, b in zip(jax.tree.leaves(plateau_observe(plain_optim, state, 1.0)),
                                       jax.tree.leaves(state)))
    assert float(current_lr(state, schedule, 3)) == pytest.approx(float(schedule(3)))


def test_plateau_with_schedule_free_and_muon():
    for opt in ("sfadamw", "muon"):
        config = opt_config(opt=opt, plateau=True, plateau_patience=1)
        assert scales_after(config, [2.0, 2.0, 2.0]) == [1.0, 0.5, 0.25], opt


def test_bad_plateau_factor_is_a_config_error():
    with pytest.raises(ConfigError, match="actor"):
        optimizer(opt_config(plateau=True, plateau_factor=1.5))
