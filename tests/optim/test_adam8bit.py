"""8-bit AdamW: quantisation error bounds, unbiased rounding, state layout and size, learning."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from minillm_jax.optim.adam8bit import (V_MIN_EXP, QuantizedArray, ScaleByAdam8bitState,
                                        adamw_8bit, dequantize_m, dequantize_u, quantize_m,
                                        quantize_u, tree_bytes)
from tests.optim.helpers import fast_jit, opt_config, optimizer, train

SHAPE = (3, 700)  # last axis not a multiple of the block: padded to 768 = 3 blocks of 256
NEAREST_U = 2 ** (1 / 32) - 1  # half a log2 step (1/16 octave) in u = sqrt(v)
STOCHASTIC_U = 2 ** (1 / 16) - 1  # a whole step


def block_absmax(x, block=256):
    """Each element's block absmax, by the same blocking (last axis, zero-padded)."""
    n = x.shape[-1]
    pad = -n % block
    xb = np.pad(np.abs(x), [(0, 0)] * (x.ndim - 1) + [(0, pad)]).reshape(
        *x.shape[:-1], -1, block)
    return np.repeat(xb.max(-1), block, axis=-1)[..., :n]


def heavy_tailed(seed, shape):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * np.exp(2 * rng.standard_normal(shape))).astype(np.float32)


@pytest.mark.parametrize("stochastic", [False, True])
def test_m_error_within_bound(stochastic):
    m = heavy_tailed(0, SHAPE)
    qa = fast_jit(quantize_m, static_argnums=1)(
        jnp.asarray(m), 256, jnp.uint32(7) if stochastic else None)
    assert qa.q.dtype == jnp.int8 and qa.q.shape == (3, 768) and qa.scale.shape == (3, 3)
    err = np.abs(np.asarray(fast_jit(dequantize_m, static_argnums=1)(qa, SHAPE)) - m)
    bound = block_absmax(m) / (127 if stochastic else 254)
    assert np.all(err <= bound * (1 + 1e-5) + 1e-12)
    assert np.all(err <= block_absmax(m) / 127 * (1 + 1e-5))  # the stated bound either way


@pytest.mark.parametrize("stochastic", [False, True])
def test_v_relative_error_within_bound(stochastic):
    # Second moments spanning 24 octaves of u within each block, plus exact zeros.
    u = np.exp2(np.random.default_rng(1).uniform(-24.0, 0.0, SHAPE)).astype(np.float32)
    u[:, ::97] = 0.0
    v = u ** 2
    qa = fast_jit(quantize_u, static_argnums=1)(
        jnp.asarray(np.sqrt(v)), 256, jnp.uint32(3) if stochastic else None)
    assert qa.q.dtype == jnp.uint8
    u_hat = np.asarray(fast_jit(dequantize_u, static_argnums=1)(qa, SHAPE))
    v_hat = u_hat ** 2
    m_abs = block_absmax(u)
    in_range = u >= m_abs * 2.0 ** V_MIN_EXP
    below = (u > 0) & ~in_range
    bound = STOCHASTIC_U if stochastic else NEAREST_U
    rel_u = np.abs(u_hat[in_range] / u[in_range] - 1)
    assert rel_u.max() <= bound + 1e-5
    assert np.abs(v_hat[in_range] / v[in_range] - 1).max() <= (1 + bound) ** 2 - 1 + 1e-5
    assert below.any() and np.all(u_hat[below] >= u[below])  # rounded up, never to zero
    assert np.all(u_hat[below] > 0) and np.all(u_hat[u == 0] == 0)


def test_stochastic_rounding_is_unbiased():
    n = 256 * 64
    m = np.full((n,), 0.002, np.float32)
    m[::256] = 1.0  # every block's absmax: 0.002 is below half a step (1/254), nearest gives 0
    u = m.copy()
    u[u < 1] = 2.0 ** (-3 - 1 / 40)  # between two log levels

    @fast_jit
    def roundtrips(m, u, seed_m, seed_u):  # traced seeds: nothing to constant-fold
        return (dequantize_m(quantize_m(m), (n,)), dequantize_m(quantize_m(m, 256, seed_m), (n,)),
                dequantize_u(quantize_u(u, 256, seed_u), (n,)))

    nearest, stochastic, u_hat = map(np.asarray, roundtrips(m, u, jnp.uint32(5), jnp.uint32(9)))
    assert np.all(nearest[m < 1] == 0)
    assert stochastic[m < 1].mean() == pytest.approx(0.002, rel=0.05)
    assert u_hat[u < 1].mean() == pytest.approx(u[1], rel=2e-3)


def test_state_layout_and_equivalence_to_adamw_without_quantisation():
    params = {"w": {"kernel": jnp.ones((2, 64, 128))}, "ln": {"scale": jnp.ones((64,))}}
    tx = adamw_8bit(1e-2, weight_decay=0.1, min_size=4096)
    state = tx.init(params)[0]
    assert isinstance(state.mu["w"]["kernel"], QuantizedArray)
    assert state.mu["w"]["kernel"].q.dtype == jnp.int8
    assert state.nu["w"]["kernel"].q.dtype == jnp.uint8
    assert state.mu["ln"]["scale"].dtype == jnp.float32  # small tensors stay float32
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(tx.init(params)))

    # With nothing quantised the chain is optax.adamw's, to the last bit.
    exact = adamw_8bit(1e-2, b1=0.9, b2=0.95, weight_decay=0.1, min_size=10 ** 12)
    ref = optax.adamw(1e-2, b1=0.9, b2=0.95, weight_decay=0.1)

    @fast_jit
    def three_steps(params):
        s1, s2, out = exact.init(params), ref.init(params), []
        for i in range(3):
            g = jax.tree.map(lambda p: jnp.sin(p * (i + 1) + jnp.arange(p.shape[-1])), params)
            u1, s1 = exact.update(g, s1, params)
            u2, s2 = ref.update(g, s2, params)
            out.append((u1, u2))
        return out

    for u1, u2 in three_steps(params):
        for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u2)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)


def test_state_bytes_of_124m_gpt():
    from minillm_jax.model.transformer import ModelConfig, Transformer, abstract_params

    params = abstract_params(Transformer(ModelConfig()))
    sizes = {}
    for opt in ("adamw", "adamw8bit"):
        tx, _ = optimizer(opt_config(opt=opt))
        state = jax.eval_shape(tx.init, params)
        sizes[opt] = tree_bytes(state)
    assert sizes["adamw"] == 991_844_360  # 2 x 4 bytes x 123,980,544 params (+ count)
    assert sizes["adamw"] / sizes["adamw8bit"] >= 3.9  # measured 3.94x (251,950,088 bytes)
    adam = [s for s in jax.tree.leaves(state, is_leaf=lambda s: isinstance(
        s, ScaleByAdam8bitState)) if isinstance(s, ScaleByAdam8bitState)][0]
    assert adam.mu["blocks"]["mlp"]["c_fc"]["kernel"].q.shape == (12, 768, 3072)
    assert adam.mu["blocks"]["mlp"]["c_fc"]["kernel"].scale.shape == (12, 768, 12)
    assert adam.mu["wte"]["embedding"].q.dtype == jnp.int8
    assert adam.nu["blocks"]["ln_1"]["scale"].dtype == jnp.float32  # norms stay float32


def test_checkpoint_roundtrip(tmp_path):
    import orbax.checkpoint as ocp

    params = {"w": {"kernel": jnp.linspace(-1, 1, 2 * 300).reshape(2, 300)}}
    tx = adamw_8bit(1e-2, min_size=0)
    state = fast_jit(lambda p: tx.update(jax.tree.map(lambda x: x * 3, p), tx.init(p), p)[1])(
        params)
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(tmp_path / "state", state)
    ckptr.wait_until_finished()
    restored = ckptr.restore(tmp_path / "state", jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state))
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
        assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b))


def test_adamw8bit_learns_like_adamw():
    first, fp32, *_ = train(opt_config(opt="adamw", grad_clip=1.0))
    first8, int8, *_ = train(opt_config(opt="adamw8bit", grad_clip=1.0))
    assert first8 == pytest.approx(first)
    assert int8 < 0.1 * first
    assert abs(int8 - fp32) <= 0.15 * fp32 + 0.01, (fp32, int8)
