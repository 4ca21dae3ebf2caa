"""One source of truth for the lr schedule's step: the train state's step, not the optimizer's
own update count (which stops at skipped steps and restarts in a params-only resume)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minillm_jax.config import build_config
from minillm_jax.optim import build_optimizer, build_schedule
from tests.conftest import tiny_config


def _params(rng):
    # names as in the model: kernels (decayed, Muon, 8-bit), an embedding, a scale
    return {"wte": {"embedding": jnp.asarray(rng.normal(size=(64, 32)), jnp.float32)},
            "h": {"kernel": jnp.asarray(rng.normal(size=(32, 32)), jnp.float32),
                  "scale": jnp.asarray(1.0 + rng.normal(size=(32,)) * 0.1, jnp.float32)}}


@pytest.mark.parametrize("opt", ["adamw", "sfadamw", "muon", "adamw8bit"])
def test_update_at_step_uses_the_schedule_at_that_step(opt):
    """An optimizer state that made 2 updates, applied at train step 7 (5 skipped steps): the
    update equals that of the same optimizer with a constant lr equal to schedule(7), an
    independent formulation; it differs from the update with schedule(2)."""
    rng = np.random.default_rng(0)
    config = build_config(tiny_config(opt=opt, adam8bit_min_size=0, scheduler="cos",
                                      iterations=20, grad_clip=0.0)).optim
    params = _params(rng)
    grads = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
             for _ in range(3)]
    count_driven, _ = build_optimizer(config, 20)
    state = count_driven.init(params)
    for g in grads[:2]:  # two applied updates: the optimizer's count is 2
        _, state = count_driven.update(g, state, params)

    schedule = build_schedule(config, 20)
    pinned, _ = build_optimizer(config, 20, step=jnp.int32(7))
    got, _ = pinned.update(grads[2], state, params)

    lr7 = float(np.float32(schedule(7)))
    ratio = config.muon_lr / config.lr
    constant = dataclasses.replace(config, scheduler="constant", lr=lr7, muon_lr=lr7 * ratio)
    reference, _ = build_optimizer(constant, 20)
    want, _ = reference.update(grads[2], state, params)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-6, atol=1e-9)

    stale, _ = count_driven.update(grads[2], state, params)  # schedule(2): the old behaviour
    assert float(schedule(2)) != pytest.approx(lr7, rel=1e-3)
    assert any(not np.allclose(a, b, rtol=1e-4)
               for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(stale)))
