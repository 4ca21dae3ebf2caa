"""Rematerialisation changes memory and time, never values: every remat policy gives the loss
and gradients of no remat (same parameters, batch and dropout masks)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minillm_jax.config import build_config
from minillm_jax.model.transformer import build_model, init_params
from minillm_jax.train.step import mean_cross_entropy, features
from tests.conftest import tiny_config


@functools.lru_cache(maxsize=None)
def _loss_and_grads(remat: str, model_name: str):
    config = build_config(tiny_config(model=model_name, remat=remat, dropout=0.1,
                                      compute_dtype="float32"), "t")
    model = build_model(config.model, config.execution)
    params = init_params(model, jax.random.PRNGKey(0))
    tokens = jax.random.randint(jax.random.PRNGKey(1), (4, 33), 0, config.model.vocab_size)

    def loss(p):
        f = features(model, p, tokens[:, :-1], train=True, rng=jax.random.PRNGKey(2))
        return mean_cross_entropy(f, tokens[:, 1:], 0)

    return jax.jit(jax.value_and_grad(loss))(params)


@pytest.mark.parametrize("remat,model_name", [("save_named", "llama"), ("save_named", "gpt"),
                                              ("full", "llama")])
def test_remat_gives_the_values_of_no_remat(remat, model_name):
    loss, grads = _loss_and_grads("none", model_name)
    loss_r, grads_r = _loss_and_grads(remat, model_name)
    assert float(loss) > 5.0  # a real loss, not a degenerate zero
    np.testing.assert_allclose(float(loss_r), float(loss), rtol=1e-6)
    for g, g_r in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_r)):
        scale = float(jnp.max(jnp.abs(g))) or 1.0
        np.testing.assert_allclose(np.asarray(g_r) / scale, np.asarray(g) / scale, atol=1e-5)
