"""Muon's three options (minillm_jax/optim/muon.py): Polar Express coefficients, NorMuon and
cautious weight decay, each against a numpy reference written here."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from minillm_jax.config import MUON_NS_COEFFICIENTS, ConfigError
from minillm_jax.optim.muon import (NS_COEFFICIENTS, NorMuonState, adamw, muon, muon_labels,
                                    orthogonalize, scale_by_muon, scale_by_width)
from tests.optim.helpers import fast_jit, opt_config, optim_config

JORDAN = [(3.4445, -4.7750, 2.0315)] * 5
# modded-nanogpt train_gpt.py `polar_express_coeffs` (Polar Express, arXiv 2505.16932), applied
# to X / (1.02 ||X||_F).
POLAR = [(8.156554524902461, -22.48329292557795, 15.878769915207462),
         (4.042929935166739, -2.808917465908714, 0.5000178451051316),
         (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
         (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
         (2.3465413258596377, -1.7097828382687081, 0.42323551169305323)]
SHAPES = [(3, 32, 96), (3, 96, 32)]  # (n_layer, in, out): wide and tall
ortho = fast_jit(orthogonalize, static_argnums=(1, 2))


def np_newton_schulz(x, rows, safety=1.0):
    """Odd quintic iterations X <- aX + (bA + cA^2)X, A = XX^T, on the wide orientation of each
    matrix (last two axes), after X / (safety ||X||_F)."""
    x = np.asarray(x, np.float64)
    tall = x.shape[-2] > x.shape[-1]
    if tall:
        x = np.swapaxes(x, -1, -2)
    x = x / (safety * np.linalg.norm(x, axis=(-2, -1), keepdims=True) + 1e-8)
    for a, b, c in rows:
        gram = x @ np.swapaxes(x, -1, -2)
        x = a * x + (b * gram + c * gram @ gram) @ x
    return np.swapaxes(x, -1, -2) if tall else x


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def ill_conditioned(shape, low, seed=0):
    """A stack of matrices with singular values logspace(0, low) and random singular vectors,
    and their polar factors U V^T."""
    rng = np.random.default_rng(seed)
    n_layer, m, n = shape
    k = min(m, n)
    u = np.linalg.qr(rng.standard_normal((n_layer, m, k)))[0]
    v = np.linalg.qr(rng.standard_normal((n_layer, n, k)))[0]
    s = np.logspace(0, low, k)
    return (np.einsum("lik,k,ljk->lij", u, s, v).astype(np.float32),
            np.einsum("lik,ljk->lij", u, v))


def test_coefficient_sets_agree_with_the_config():
    assert set(NS_COEFFICIENTS) == set(MUON_NS_COEFFICIENTS)
    for name, steps in MUON_NS_COEFFICIENTS.items():
        rows = np.asarray(NS_COEFFICIENTS[name])
        assert rows.shape == ((3,) if steps is None else (steps, 3))


@pytest.mark.parametrize("shape", SHAPES)
def test_polar_express_equals_the_numpy_iteration(shape):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    ref = np_newton_schulz(x, POLAR, safety=1.02)
    out = ortho(jnp.asarray(x), 5, "polar_express")
    assert rel(out, ref) < 1e-5
    # Without the 1.02 safety factor, or with Jordan's coefficients, the iteration differs.
    assert rel(out, np_newton_schulz(x, POLAR)) > 1e-3
    assert rel(ortho(jnp.asarray(x), 5, "jordan"), ref) > 1e-2
    assert rel(ortho(jnp.asarray(x), 5, "jordan"), np_newton_schulz(x, JORDAN)) < 1e-5
    # Muon's update (first step: the normalised gradient, whatever the momentum), in float32
    # and with bfloat16 matmuls (where the steep first polynomial amplifies the rounding, of
    # the coefficients too: measured 10% off, Jordan's 7%); the same optimizer state either way.
    grads = {"k": jnp.asarray(x)}
    states = {}
    for dtype, tol in (("float32", 1e-5), ("bfloat16", 0.15)):
        tx = scale_by_muon(0.95, 5, dtype, "polar_express")
        u, states[dtype] = fast_jit(tx.update)(grads, tx.init(grads))
        assert u["k"].dtype == jnp.float32
        assert rel(u["k"], ref) < tol, dtype
    assert states["bfloat16"].ns_coeffs.shape == (5, 3)
    jax.tree.map(np.testing.assert_array_equal, states["float32"], states["bfloat16"])


@pytest.mark.parametrize("shape", SHAPES)
def test_polar_express_is_closer_to_the_polar_factor(shape):
    """Singular values 1 .. 1e-2: after 5 steps Polar Express's are within [0.85, 1.15] (bf16
    matmuls: [0.83, 1.17]), Jordan's only within [0.66, 1.15] (measured max |s - 1|: 0.14-0.17
    and 0.32-0.34)."""
    x, polar_factor = ill_conditioned(shape, -2)
    for dtype in (jnp.float32, jnp.bfloat16):
        out = {c: np.asarray(ortho(jnp.asarray(x, dtype), 5, c), np.float64)
               for c in ("jordan", "polar_express")}
        worst = {c: np.abs(np.linalg.svd(o, compute_uv=False) - 1).max() for c, o in out.items()}
        assert worst["polar_express"] < 0.2 and worst["jordan"] > 0.3, (dtype, worst)
        assert rel(out["polar_express"], polar_factor) < rel(out["jordan"], polar_factor)


# ------------------------------------------------------------------------------------------------
# NorMuon

NORMUON_SHAPES = {"c_fc": (2, 16, 48), "c_proj": (2, 48, 16)}


def _muon_params(rng):
    params = {"blocks": {name: {"kernel": rng.standard_normal(s).astype(np.float32)}
                         for name, s in NORMUON_SHAPES.items()},
              "wte": {"embedding": rng.standard_normal((8, 16)).astype(np.float32)},
              "lm_head": {"kernel": rng.standard_normal((16, 8)).astype(np.float32)}}
    return jax.tree.map(jnp.asarray, params)


def np_normuon_updates(grads, lr, beta=0.95, beta2=0.95, axis=-2):
    """-lr * width * NorMuon(NS(Nesterov momentum)) for each step's grads of one kernel."""
    mu, nu, out = 0.0, 0.0, []
    for t, g in enumerate(grads, start=1):
        g = np.asarray(g, np.float64)
        mu = beta * mu + (1 - beta) * g
        nesterov = beta * mu / (1 - beta ** (t + 1)) + (1 - beta) * g / (1 - beta ** t)
        o = np_newton_schulz(nesterov, JORDAN)
        nu = beta2 * nu + (1 - beta2) * np.mean(o ** 2, axis=axis, keepdims=True)
        scaled = o / (np.sqrt(nu) + 1e-10)
        scaled *= np.linalg.norm(o) / np.linalg.norm(scaled)  # one matrix per layer
        width = np.sqrt(max(1.0, g.shape[-1] / g.shape[-2]))
        out.append(-lr * width * scaled)
    return out


def _per_layer(fn, x):
    return np.stack([fn(x[i]) for i in range(x.shape[0])])


@pytest.mark.parametrize("normuon", [True, False])
def test_normuon_two_steps_against_numpy(normuon):
    rng = np.random.default_rng(2)
    params = _muon_params(rng)
    grads = [jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32),
                          params) for _ in range(2)]
    lr = 0.02
    tx = muon(lr, 1e-3, normuon=normuon)
    state = tx.init(params)
    nus = [s for s in jax.tree.leaves(state, is_leaf=lambda s: isinstance(s, NorMuonState))
           if isinstance(s, NorMuonState)]
    assert len(nus) == int(normuon)  # the extra state only when on
    if normuon:
        assert {k: v["kernel"].shape for k, v in nus[0].nu["blocks"].items()} == {
            "c_fc": (2, 1, 48), "c_proj": (2, 1, 16)}
    update = fast_jit(tx.update)
    got = []
    for g in grads:
        u, state = update(g, state, params)
        got.append(u)
    for name in NORMUON_SHAPES:
        kernel_grads = [np.asarray(g["blocks"][name]["kernel"]) for g in grads]
        ref = [np.stack(r) for r in zip(*(np_normuon_updates([g[i] for g in kernel_grads], lr)
                                          for i in range(2)))]  # layer by layer
        wrong_axis = [np.stack(r) for r in zip(*(
            np_normuon_updates([g[i] for g in kernel_grads], lr, axis=-1) for i in range(2)))]
        for step in range(2):
            u = got[step]["blocks"][name]["kernel"]
            if normuon:
                assert rel(u, ref[step]) < 1e-4, (name, step)
                assert rel(u, wrong_axis[step]) > 1e-2
            else:  # plain Muon is not the NorMuon reference
                assert rel(u, ref[step]) > 1e-2, (name, step)


# ------------------------------------------------------------------------------------------------
# Cautious weight decay


def _decay_mask(params):
    return jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key == "kernel", params)


def test_cautious_weight_decay_first_step_against_numpy():
    """Both groups: p's update is -lr (u + wd p 1[u p > 0]), u Muon's width * NS(g) or Adam's
    g / (|g| + eps) on the first step; AdamW's mask leaves the embedding undecayed."""
    rng = np.random.default_rng(3)
    params = _muon_params(rng)
    grads = jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32),
                         params)
    lr, adam_lr, wd, adam_wd = 0.02, 0.01, 0.5, 0.3
    tx = muon(lr, adam_lr, weight_decay=wd, adam_weight_decay=adam_wd, adam_mask=_decay_mask,
              cautious_weight_decay=True)
    got, _ = fast_jit(tx.update)(grads, tx.init(params), params)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        keys = [k.key for k in path]
        p = np.asarray(_at(params, keys), np.float64)
        g = np.asarray(g, np.float64)
        if keys[0] == "blocks":
            step, decay = lr, wd
            u = _per_layer(lambda m: np_newton_schulz(m, JORDAN), g) * np.sqrt(
                max(1.0, g.shape[-1] / g.shape[-2]))
        else:
            step, decay = adam_lr, adam_wd * (keys[-1] == "kernel")
            u = g / (np.abs(g) + 1e-8)
        agree = u * p > 0
        assert 0.2 < agree.mean() < 0.8
        expected = -step * (u + decay * p * agree)
        np.testing.assert_allclose(_at(got, keys), expected, rtol=2e-4, atol=1e-6,
                                   err_msg=str(keys))
        if decay:  # plain decoupled decay is a different update
            assert np.abs(np.asarray(_at(got, keys)) - (-step * (u + decay * p))).max() > 1e-3


def _at(tree, keys):
    for k in keys:
        tree = tree[k]
    return tree


def test_cautious_decay_spares_opposing_coordinates_and_is_exact_when_off():
    rng = np.random.default_rng(4)
    params = _muon_params(rng)
    grads = jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32),
                         params)
    kw = dict(adam_mask=_decay_mask)

    def first(tx):
        return fast_jit(tx.update)(grads, tx.init(params), params)

    plain, _ = first(muon(0.02, 0.01, **kw))
    cautious, state = first(muon(0.02, 0.01, weight_decay=0.5, adam_weight_decay=0.3,
                                 cautious_weight_decay=True, **kw))
    for keys in (("blocks", "c_fc", "kernel"), ("lm_head", "kernel")):
        u, p, c = (np.asarray(_at(t, keys)) for t in (plain, params, cautious))
        opposing = (-u) * p < 0  # the applied update is -lr u
        assert opposing.any() and (~opposing).any()
        # not decayed (up to the rounding of a differently fused program), the others decayed
        np.testing.assert_allclose(c[opposing], u[opposing], rtol=1e-5, atol=1e-9)
        assert np.all(np.abs(c[~opposing] - u[~opposing]) > 1e-5 * np.abs(p[~opposing]))
    # Off: the previous optimizer (optax's add_decayed_weights and adamw), bit for bit; on with
    # wd=0: the same; and the state structure never changes.
    old = optax.partition(
        {"muon": optax.chain(scale_by_muon(0.95, 5), scale_by_width(),
                             optax.add_decayed_weights(0.5), optax.scale_by_learning_rate(0.02)),
         "adam": optax.adamw(0.01, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.3,
                             mask=_decay_mask)},
        muon_labels)
    ref, ref_state = first(old)
    off, off_state = first(muon(0.02, 0.01, weight_decay=0.5, adam_weight_decay=0.3, **kw))
    jax.tree.map(np.testing.assert_array_equal, off, ref)
    assert jax.tree.structure(off_state) == jax.tree.structure(ref_state) == \
        jax.tree.structure(state)
    zero, _ = first(muon(0.02, 0.01, cautious_weight_decay=True, **kw))
    jax.tree.map(np.testing.assert_array_equal, zero, plain)
    for wd in (0.0, 0.3):  # AdamW alone (opt=adamw): cautious with wd=0 is optax.adamw
        a = adamw(0.01, weight_decay=wd, mask=_decay_mask, cautious_weight_decay=True)
        b = optax.adamw(0.01, weight_decay=wd, mask=_decay_mask)
        (ua, sa), (ub, sb) = first(a), first(b)
        assert jax.tree.structure(sa) == jax.tree.structure(sb)
        same = jax.tree.map(lambda x, y: bool(np.array_equal(x, y)), ua, ub)
        assert all(jax.tree.leaves(same)) == (wd == 0.0)


# ------------------------------------------------------------------------------------------------
# Config


def test_config_defaults_and_errors():
    config = optim_config(opt_config(opt="muon"))
    assert (config.muon_ns_coefficients, config.muon_normuon, config.cautious_weight_decay) == (
        "jordan", False, False)
    bad = [({"muon_ns_coefficients": "cubic"}, "muon_ns_coefficients",
            r"config\.muon_ns_coefficients='cubic' is unknown: use one of \['jordan', "),
           ({"muon_ns_coefficients": "polar_express", "muon_ns_steps": 6}, "muon_ns_steps",
            r"config\.muon_ns_steps=6 must be 5 with muon_ns_coefficients='polar_express'"),
           ({"cautious_weight_decay": True, "opt": "lion"}, "cautious_weight_decay",
            r"config\.cautious_weight_decay=True is implemented for opt in \['adamw', 'muon'\]")]
    for overrides, field, message in bad:
        with pytest.raises(ConfigError, match=message) as err:
            optim_config(opt_config(**{"opt": "muon", **overrides}))
        assert err.value.field == field and "\n" not in str(err.value)


def test_factory_wires_the_options():
    from minillm_jax.optim import build_optimizer

    params = _muon_params(np.random.default_rng(5))
    config = optim_config(opt_config(opt="muon", muon_ns_coefficients="polar_express",
                                     muon_normuon=True, cautious_weight_decay=True))
    state = jax.eval_shape(build_optimizer(config, 10)[0].init, params)
    leaves = jax.tree.leaves(state, is_leaf=lambda s: isinstance(s, (NorMuonState,
                                                                     optax.contrib.MuonState)))
    assert any(isinstance(s, NorMuonState) for s in leaves)
    assert [s.ns_coeffs.shape for s in leaves if isinstance(s, optax.contrib.MuonState)] == [
        (5, 3)]
    adam_config = optim_config(opt_config(opt="adamw", cautious_weight_decay=True))
    plain = optim_config(opt_config(opt="adamw"))
    assert jax.tree.structure(jax.eval_shape(build_optimizer(adam_config, 10)[0].init, params)) \
        == jax.tree.structure(jax.eval_shape(build_optimizer(plain, 10)[0].init, params))
