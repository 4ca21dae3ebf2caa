"""Every config.opt learns and keeps the decay groups and clipping; Muon and schedule-free."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from minillm_jax.config import ConfigError
from minillm_jax.optim import OPTIMIZERS, eval_params
from minillm_jax.optim.muon import BATCHED_MATRIX, muon_labels, orthogonalize
from tests.optim.helpers import fast_jit, init_params, opt_config, optimizer, train

# Peak lr per optimizer for the 40-step toy problem (Lion wants ~3-10x less than AdamW).
LRS = {"adamw": 3e-3, "adamw8bit": 3e-3, "lion": 1e-3, "muon": 3e-3, "sfadamw": 3e-3, "sgd": 0.1}


SCHEDULE_FREE = dict(opt="sfadamw", scheduler="wsd", wsd_decay_frac=0.0)  # warm-up + constant


@pytest.mark.parametrize("opt", ["lion", "muon", "sfadamw"])
def test_reduces_loss(opt):
    config = opt_config(**{**dict(opt=opt, lr=LRS[opt], grad_clip=1.0),
                           **(SCHEDULE_FREE if opt == "sfadamw" else {})})
    first, last, params, state, last_eval = train(config, untied=opt == "muon")
    assert last < 0.1 * first, (opt, first, last)
    if opt == "sfadamw":
        check_schedule_free_eval_params(config, params, state)
        assert last_eval < 0.1 * first  # the evaluation sequence x has learnt too
    else:
        assert last_eval == last


def test_unknown_opt():
    with pytest.raises(ConfigError, match="opt"):
        optimizer(opt_config(opt="adafactor"))


@pytest.mark.parametrize("opt", OPTIMIZERS)
def test_decay_groups_and_grad_clip(opt):
    """Zero gradients: only Dense kernels move (decoupled weight decay); embeddings, norms and
    biases do not. Clipping: a gradient and its clipped version give the same update."""
    config = opt_config(opt=opt, lr=LRS[opt], muon_weight_decay=0.1, grad_clip=1.0,
                        scheduler="constant", adam8bit_min_size=0)
    params = init_params(1, untied=True)
    tx, _ = optimizer(config)
    big = jax.tree.map(lambda p: 100.0 * np.sin(1000.0 * np.asarray(p) + 1.0), params)
    norm = np.sqrt(sum(np.sum(np.square(g)) for g in jax.tree.leaves(big)))
    clipped = jax.tree.map(lambda g: g / norm, big)  # what grad_clip = 1 makes of `big`

    # Gradients are arguments, not closed-over constants (XLA would constant-fold the update).
    grads = jax.tree.map(lambda b, c: np.stack([np.zeros_like(b), b, c]), big, clipped)

    @fast_jit
    def three_updates(params, grads):  # one vmapped update (a third of the compile time of three)
        state = tx.init(params)
        return jax.vmap(lambda g: tx.update(g, state, params)[0])(grads)

    stacked = jax.tree.map(np.asarray, three_updates(params, grads))
    updates, u_big, u_clip = (jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(3))
    flat_params = {jax.tree_util.keystr(k): np.asarray(v) for k, v in
                   jax.tree_util.tree_flatten_with_path(params)[0]}
    for path, u in jax.tree_util.tree_flatten_with_path(updates)[0]:
        name, u = jax.tree_util.keystr(path), np.asarray(u)
        p = flat_params[name]
        if name.endswith("['kernel']"):
            assert np.vdot(u, p) < 0, (opt, name)  # decay shrinks the kernel
        else:  # schedule-free's (y - (1-b1) z)/b1 round trip leaves float32 rounding noise
            assert np.abs(u).max() <= 1e-6 * np.abs(p).max(), (opt, name)
    for a, b in zip(jax.tree.leaves(u_big), jax.tree.leaves(u_clip)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7)
    if opt == "muon":  # the stacked (L, in, out) kernel's update is orthogonal layer by layer
        u = np.asarray(u_clip["blocks"]["mlp"]["c_fc"]["kernel"])
        decay = config.muon_weight_decay * np.asarray(params["blocks"]["mlp"]["c_fc"]["kernel"])
        width = np.sqrt(max(1.0, u.shape[-1] / u.shape[-2]))
        s = np.linalg.svd(-u / config.muon_lr / width - decay, compute_uv=False)
        assert u.shape == (2, 64, 128) and s.min() > 0.5 and s.max() < 1.5, (s.min(), s.max())


def check_schedule_free_eval_params(config, params, state):
    x = eval_params(state, params)
    sf = [s for s in jax.tree.leaves(state, is_leaf=lambda s: isinstance(
        s, optax.contrib.ScheduleFreeState)) if isinstance(s, optax.contrib.ScheduleFreeState)][0]
    b1 = config.beta1
    for xi, yi, zi in zip(jax.tree.leaves(x), jax.tree.leaves(params), jax.tree.leaves(sf.z)):
        np.testing.assert_allclose(xi, (yi - (1 - b1) * zi) / b1, rtol=1e-5, atol=1e-6)
    diff = max(np.abs(np.asarray(a) - np.asarray(b)).max()
               for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(params)))
    assert diff > 1e-4  # the evaluation sequence x is not the iterate y
    # Other optimizers, or no state (params-only checkpoints): the params themselves.
    assert eval_params(None, params) is params
    adam_state = optimizer(opt_config())[0].init(params)
    assert eval_params(adam_state, params) is params


def test_muon_labels_on_the_real_models():
    from minillm_jax.model.transformer import ModelConfig, Transformer, abstract_params

    for cfg in (ModelConfig(n_layer=2, n_embd=64, n_head=4, vocab_size=128, sequence_length=16),
                ModelConfig(model="llama", n_layer=2, n_embd=64, n_head=4, vocab_size=128,
                            sequence_length=16, tie_embeddings=False)):
        labels = muon_labels(abstract_params(Transformer(cfg)))
        for path, label in jax.tree_util.tree_flatten_with_path(labels)[0]:
            name = jax.tree_util.keystr(path)
            hidden = name.startswith("['blocks']") and name.endswith("['kernel']")
            assert label == ("muon" if hidden else "adam"), (cfg.model, name, label)
    moe = {"blocks": {"moe": {"router": {"kernel": np.zeros((2, 64, 8))},
                              "c_fc": {"kernel": np.zeros((2, 8, 64, 256))}}}}
    assert muon_labels(moe) == {"blocks": {"moe": {"router": {"kernel": "adam"},
                                                   "c_fc": {"kernel": "muon"}}}}


@pytest.mark.parametrize("shape", [(3, 32, 96), (48, 40)])
def test_muon_orthogonalises_each_layer(shape):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    x = jnp.asarray(x * np.arange(1, 1 + shape[0]).reshape((-1,) + (1,) * (len(shape) - 1)))
    out = fast_jit(orthogonalize)(x)
    assert out.shape == shape
    s = np.linalg.svd(np.asarray(out).reshape((-1,) + shape[-2:]), compute_uv=False)
    # The quintic Newton-Schulz (5 steps) maps singular values into about [0.7, 1.2].
    assert s.min() > 0.5 and s.max() < 1.5, (s.min(), s.max())
    if len(shape) == 3:  # each (in, out) matrix of the stack is handled on its own
        np.testing.assert_allclose(out[1], fast_jit(orthogonalize)(x[1]), rtol=1e-4, atol=1e-5)


def test_muon_newton_schulz_in_bfloat16():
    """ns_dtype=bfloat16 (a bfloat16 run, as modded-nanogpt): the same state as float32 (same
    checkpoints), an update that is still orthogonal in Newton-Schulz's sense, close in direction
    to float32's; float32 is optax's transform unchanged, bit for bit."""
    from minillm_jax.optim.muon import scale_by_muon

    rng = np.random.default_rng(0)
    grads = {"a": jnp.asarray(rng.standard_normal((3, 64, 192)), jnp.float32),
             "b": jnp.asarray(rng.standard_normal((96, 80)), jnp.float32)}
    updates, states = {}, {}
    for dtype in ("float32", "bfloat16"):
        tx = scale_by_muon(0.95, 5, dtype)
        state = tx.init(grads)
        for _ in range(2):  # the second step uses the momentum
            u, state = jax.jit(tx.update)(grads, state)
        updates[dtype], states[dtype] = u, state
    assert jax.tree.structure(states["float32"]) == jax.tree.structure(states["bfloat16"])
    assert jax.tree.map(lambda a: (a.shape, a.dtype), states["float32"]) == \
        jax.tree.map(lambda a: (a.shape, a.dtype), states["bfloat16"])
    np.testing.assert_array_equal(states["float32"].mu["a"], states["bfloat16"].mu["a"])
    optax_tx = optax.contrib.scale_by_muon(ns_steps=5, beta=0.95, nesterov=True,
                                           weight_dimension_numbers=lambda t: jax.tree.map(
                                               lambda _: BATCHED_MATRIX, t))
    optax_u, _ = jax.jit(optax_tx.update)(grads, optax_tx.init(grads))
    first_f32, _ = jax.jit(scale_by_muon(0.95, 5, "float32").update)(grads, optax_tx.init(grads))
    jax.tree.map(np.testing.assert_array_equal, first_f32, optax_u)
    for name, shape in (("a", (3, 64, 192)), ("b", (96, 80))):
        low, high = (np.asarray(updates[d][name], np.float64) for d in ("bfloat16", "float32"))
        assert updates["bfloat16"][name].dtype == jnp.float32
        s = np.linalg.svd(low.reshape((-1,) + shape[-2:]), compute_uv=False)
        assert s.min() > 0.5 and s.max() < 1.5, (s.min(), s.max())  # as float32's (test above)
        # Newton-Schulz's slope (up to 3.4 per step near 0) amplifies bf16 rounding, so the
        # updates differ by several % (measured 5-7%) yet point the same way
        cosine = np.sum(low * high) / np.linalg.norm(low) / np.linalg.norm(high)
        assert cosine > 0.99 and not np.array_equal(low, high), cosine
