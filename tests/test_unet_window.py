"""unet_skips (U-net skip connections) and attention_window (sliding-window attention): the model
against an unrolled reference, each attention kernel against a numpy banded-mask reference,
config validation, and "off" = the plain model. KV-cache and HF-export parity with these options
are in tests/test_generation.py and tests/export/test_hf_options.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minillm_jax.config import ConfigError
from minillm_jax.model import transformer as M
from minillm_jax.model.attention import (
    causal_attention, causal_attention_by_blocks, dropout_attention, dropout_keep_mask,
    xla_attention)
from minillm_jax.model.layers import RMSNorm
from tests.fast_compile import FAST_COMPILE

TINY = dict(model="llama", n_embd=32, n_head=2, vocab_size=64, sequence_length=16)
F32 = M.ExecutionConfig(compute_dtype="float32")


def _fast(fn):
    return jax.jit(fn, compiler_options=FAST_COMPILE)


def _params(model, seed=0):
    return _fast(lambda key: model.init({"params": key}, jnp.zeros((1, 8), jnp.int32))["params"])(
        jax.random.key(seed))


def _idx(t=16, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, 64, (2, t)), jnp.int32)


# ---- unet_skips --------------------------------------------------------------------------------

def _unrolled_unet_logits(cfg, params, idx):
    """The U-net written out: block l's input gets w[n-1-l] * (block n-1-l's output) added for
    l >= n - n//2; each block is M.Block applied alone to its slice of the stacked parameters."""
    plain = M.ModelConfig(**{**TINY, "n_layer": cfg.n_layer})
    block = M.Block(plain, F32, train=False)
    x = params["wte"]["embedding"][idx]
    n, w, outputs = cfg.n_layer, params["unet_skip_weights"], []
    for layer in range(n):
        if layer >= n - n // 2:
            x = x + w[n - 1 - layer] * outputs[n - 1 - layer]
        layer_params = jax.tree.map(lambda p: p[layer], params["blocks"])
        x, _ = block.apply({"params": layer_params}, x)
        outputs.append(x)
    x = RMSNorm(plain.rmsnorm_eps).apply({"params": params["ln_f"]}, x)
    return jnp.einsum("btc,vc->btv", x, params["wte"]["embedding"])


def test_unet_skips_equal_an_unrolled_reference():
    """Non-zero skip weights, scanned with remat: logits equal the written-out U-net's (n_layer 4:
    pairs 0 -> 3 and 1 -> 2, the middle one adding block 1's output to itself); at init (zero
    weights) the model is the plain model with the same other parameters. (Odd depth, unrolled:
    the HF export parity in tests/export/test_hf_options.py.)"""
    n_layer = 4
    cfg = M.ModelConfig(**TINY, n_layer=n_layer, unet_skips=True)
    model = M.Transformer(cfg, M.ExecutionConfig(compute_dtype="float32", remat="save_named"))
    params = _params(model)
    assert params["unet_skip_weights"].shape == (n_layer // 2,)
    assert not np.any(np.asarray(params["unet_skip_weights"]))  # zero init
    idx = _idx()
    plain = M.Transformer(M.ModelConfig(**TINY, n_layer=n_layer), F32)
    plain_params = {k: v for k, v in params.items() if k != "unet_skip_weights"}
    forward = _fast(lambda p: model.apply({"params": p}, idx))
    want_plain = _fast(lambda p: plain.apply({"params": p}, idx))(plain_params)
    np.testing.assert_array_equal(forward(params), want_plain)
    params = {**params, "unet_skip_weights": jnp.array([0.9, -0.6])}
    got = forward(params)
    want = _fast(lambda p: _unrolled_unet_logits(cfg, p, idx))(params)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert float(jnp.max(jnp.abs(got - want_plain))) > 1e-2


# ---- attention_window: kernels -----------------------------------------------------------------

def _numpy_banded(q, k, v, window, keep=None, rate=0.0):
    """float64 softmax attention with an explicit (T, T) mask: key j visible from query i iff
    j <= i and (window == 0 or i - j < window); optional dropout keep mask (B, H, T, T)."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    t = q.shape[1]
    mask = np.zeros((t, t), bool)
    for i in range(t):
        for j in range(t):
            mask[i, j] = j <= i and (window == 0 or i - j < window)
    scores = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(q.shape[-1])
    scores = np.where(mask, scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    if keep is not None:
        probs = probs * np.asarray(keep) / (1.0 - rate)
    return np.einsum("bhts,bshd->bthd", probs, v)


def _qkv(t, seed=0):
    keys = jax.random.split(jax.random.key(seed), 3)
    return tuple(jax.random.normal(key, (2, t, 2, 8)) for key in keys)


KERNELS = {
    "xla": lambda q, k, v, w: xla_attention(q, k, v, w),
    "xla_blocks": lambda q, k, v, w: causal_attention_by_blocks(q, k, v, window=w),
}


@pytest.mark.parametrize("name", list(KERNELS))
def test_windowed_kernels_equal_a_banded_numpy_reference(name):
    """T = 64 (4 query blocks in xla_blocks): windows 1 (each query sees only itself: the output
    is v), 20 (crosses block edges) and >= T (full causal attention)."""
    q, k, v = _qkv(64)
    for window in (1, 20, 64):
        got = jax.jit(KERNELS[name], static_argnums=(3,), compiler_options=FAST_COMPILE)(
            q, k, v, window)
        np.testing.assert_allclose(got, _numpy_banded(q, k, v, window), rtol=1e-5, atol=1e-5)
        if window == 1:
            np.testing.assert_allclose(got, v, rtol=1e-6, atol=1e-6)
        if window == 64:
            np.testing.assert_allclose(got, _numpy_banded(q, k, v, 0), rtol=1e-5, atol=1e-5)


def test_xla_blocks_skips_key_blocks_left_of_the_band():
    """A static window of 5 over 4 blocks of 16 rows: block i > 0 multiplies keys from
    16 i - 4 on (20 keys), not all 16 (i + 1)."""
    q, k, v = _qkv(64)
    text = jax.jit(lambda q, k, v: causal_attention_by_blocks(q, k, v, window=5)).lower(
        q, k, v).as_text()
    assert "tensor<2x2x16x20xf32>" in text and "tensor<2x2x16x64xf32>" not in text


def test_windowed_dropout_attention_and_per_layer_flag():
    """dropout_attention with a window vs the numpy reference with the same keep mask; and
    causal_attention's traced per-layer flag: windowed where true, full causal where false."""
    q, k, v = _qkv(16, seed=2)
    rng, rate = jax.random.key(3), 0.1
    keep = dropout_keep_mask(rng, rate, (2, 2, 16, 16))
    got = _fast(lambda q, k, v: dropout_attention(q, k, v, rng, rate, jnp.asarray(4)))(q, k, v)
    np.testing.assert_allclose(got, _numpy_banded(q, k, v, 4, keep, rate), rtol=1e-5, atol=1e-5)
    for impl in ("xla", "xla_blocks"):
        run = _fast(lambda flag: causal_attention(
            q, k, v, dropout_rate=0.0, dropout_rng=None, implementation=impl, window=4,
            windowed=flag))
        np.testing.assert_allclose(run(True), _numpy_banded(q, k, v, 4), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(run(False), _numpy_banded(q, k, v, 0), rtol=1e-5, atol=1e-5)


# ---- attention_window: the model, config -------------------------------------------------------

def test_window_layers_in_the_model():
    """alternate: layer 0 windowed, layer 1 full. With window 3 in layer 0 only, the logits equal
    the plain model's for the first 3 positions only; parameters are the plain model's."""
    assert M.ModelConfig(**TINY, n_layer=4, attention_window=2,
                         attention_window_layers="alternate").windowed_layers == (
        True, False, True, False)
    assert M.ModelConfig(**TINY, n_layer=3, attention_window=2,
                         attention_window_layers="all_but_last").windowed_layers == (
        True, True, False)
    plain = M.Transformer(M.ModelConfig(**TINY, n_layer=2), F32)
    params = _params(plain)
    idx = _idx()
    want = _fast(plain.apply)({"params": params}, idx)
    wide = M.Transformer(M.ModelConfig(**TINY, n_layer=2, attention_window=16), F32)
    assert jax.tree.map(jnp.shape, M.abstract_params(wide)) == jax.tree.map(jnp.shape, params)
    alt = M.Transformer(M.ModelConfig(**TINY, n_layer=2, attention_window=3,
                                      attention_window_layers="alternate"), F32)
    got_alt = _fast(alt.apply)({"params": params}, idx)
    # the first 3 positions see the same keys either way; later ones differ
    np.testing.assert_allclose(got_alt[:, :3], want[:, :3], rtol=1e-5, atol=1e-5)
    assert float(jnp.max(jnp.abs(got_alt - want))) > 1e-3


@pytest.mark.parametrize("fields,message", [
    (dict(unet_skips=True, weighted_residual=True), "weighted_residual=False"),
    (dict(unet_skips=True, n_layer=1), "needs n_layer >= 2"),
    (dict(attention_window=-1), "attention_window"),
    (dict(attention_window=4, attention_window_layers="odd"), "attention_window_layers"),
])
def test_config_validation_is_one_line(fields, message):
    with pytest.raises(ConfigError, match=message) as err:
        M.ModelConfig(**{**TINY, "n_layer": 2, **fields})
    assert "\n" not in str(err.value)


def test_options_off_by_default():
    cfg = M.ModelConfig(**TINY, n_layer=2)
    assert (cfg.unet_skips, cfg.attention_window, cfg.attention_window_layers) == (
        False, 0, "all")
    assert cfg.windowed_layers == (False, False)
    params = M.abstract_params(M.Transformer(cfg, F32))
    assert "unet_skip_weights" not in params
