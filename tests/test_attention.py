"""Attention kernels: the choice per device (and the cuDNN probe), the XLA and rematerialised
dropout paths against independent formulations, dropout masks, bf16 vs float32, CUDA lowering."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minillm_jax.model.attention import (AttentionChoice, _dropout_attention, attention_for_device,
                                   causal_attention_by_blocks, choose_attention,
                                   dropout_attention, dropout_keep_mask, xla_attention)
from minillm_jax.config import ConfigError

H100 = dict(platform="gpu", device_kind="NVIDIA H100 80GB HBM3")
A100 = dict(platform="gpu", device_kind="NVIDIA A100-SXM4-80GB")
CPU = dict(platform="cpu", device_kind="cpu")


@pytest.mark.parametrize("device,dtype,head_dim,dropout,expected", [
    (H100, "bfloat16", 64, 0.0, "cudnn"),
    (A100, "bfloat16", 64, 0.05, "cudnn"),   # eval fused; training takes the remat XLA path
    (H100, "float32", 64, 0.0, "xla"),       # cuDNN needs 16-bit inputs
    (CPU, "bfloat16", 64, 0.0, "xla"),
    (H100, "bfloat16", 60, 0.0, "xla"),      # head dim not a multiple of 8
    (A100, "bfloat16", 192, 0.0, "xla"),     # > 128 before Hopper
    (H100, "bfloat16", 192, 0.0, "cudnn"),   # Hopper goes to 256
])
def test_auto_choice(device, dtype, head_dim, dropout, expected):
    choice = choose_attention("auto", compute_dtype=dtype, head_dim=head_dim,
                              attention_dropout=dropout, **device)
    assert choice.impl == expected
    assert choice.reason.startswith("auto")
    if expected == "xla":
        assert "no cuDNN fused attention because" in choice.reason
    if dropout:
        assert "rematerialised XLA path" in choice.reason


def test_explicit_choices():
    assert choose_attention("xla", compute_dtype="bfloat16", head_dim=64, attention_dropout=0.0,
                            **H100).impl == "xla"
    assert choose_attention("cudnn", compute_dtype="bfloat16", head_dim=64,
                            attention_dropout=0.0, **H100).impl == "cudnn"


@pytest.mark.parametrize("device,dtype,head_dim,dropout,match", [
    (CPU, "bfloat16", 64, 0.0, "needs an NVIDIA GPU"),
    (H100, "float32", 64, 0.0, "needs a 16-bit compute dtype"),
    (H100, "bfloat16", 36, 0.0, "multiple of 8"),
    (H100, "bfloat16", 64, 0.05, "no attention-probability dropout"),
])
def test_explicit_cudnn_that_cannot_run_is_one_clear_error(device, dtype, head_dim, dropout,
                                                            match):
    with pytest.raises(ConfigError, match=match) as err:
        choose_attention("cudnn", compute_dtype=dtype, head_dim=head_dim,
                         attention_dropout=dropout, **device)
    assert "\n" not in str(err.value) and "attention_impl=auto" in str(err.value)


def _reference_attention(q, k, v, keep, rate):
    """Causal attention written out on its own: explicit softmax over the allowed keys, then the
    given keep mask (B, H, T, T) applied and rescaled by hand."""
    d = q.shape[-1]
    scores = jnp.einsum("bthd,bshd->bhts", q, k) / np.sqrt(d)
    t = q.shape[1]
    allowed = np.arange(t)[:, None] >= np.arange(t)[None, :]
    scores = jnp.where(allowed, scores, -np.inf)
    weights = jnp.exp(scores - scores.max(-1, keepdims=True))
    probs = weights / weights.sum(-1, keepdims=True)
    probs = probs * keep / (1.0 - rate)
    return jnp.einsum("bhts,bshd->bthd", probs, v)


def _qkv(shape=(2, 16, 4, 8), seed=0):
    keys = jax.random.split(jax.random.key(seed), 3)
    return tuple(jax.random.normal(key, shape) for key in keys)


def test_rematerialised_dropout_attention_matches_an_independent_formulation(capsys):
    """The training path (dropout on the probabilities, rematerialised) against attention written
    out by hand with the same keep mask: values and gradients; the remat path saves only its
    inputs for the backward pass."""
    q, k, v = _qkv()
    rng, rate = jax.random.key(3), 0.1
    keep = dropout_keep_mask(rng, rate, (2, 4, 16, 16))
    assert 0 < float(jnp.mean(~keep)) < 0.3  # a real mask, not all-keep

    def loss(fn):
        return jax.jit(jax.value_and_grad(lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v))),
                                          argnums=(0, 1, 2)))

    got, got_grads = loss(lambda q, k, v: dropout_attention(q, k, v, rng, rate))(q, k, v)
    want, want_grads = loss(lambda q, k, v: _reference_attention(q, k, v, keep, rate))(q, k, v)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for g, w in zip(got_grads, want_grads):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    # in float64 numpy too (no JAX autodiff on the reference side), for the forward pass
    qn, kn, vn = (np.asarray(x, np.float64) for x in (q, k, v))
    scores = np.einsum("bthd,bshd->bhts", qn, kn) / np.sqrt(8)
    scores[..., ~(np.arange(16)[:, None] >= np.arange(16)[None, :])] = -np.inf
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs = probs / probs.sum(-1, keepdims=True) * np.asarray(keep) / (1 - rate)
    out = jax.jit(lambda q, k, v: dropout_attention(q, k, v, rng, rate))(q, k, v)
    np.testing.assert_allclose(out, np.einsum("bhts,bshd->bthd", probs, vn), rtol=1e-5,
                               atol=1e-6)
    # the remat path keeps no (B, H, T, T) residual for the backward pass, the plain one does
    saved = _saved_residuals(lambda q, k, v: dropout_attention(q, k, v, rng, rate), q, k, v,
                             capsys=capsys)
    assert "[2,4,16,16]" not in saved and saved.count("from the argument") == 3
    plain = _saved_residuals(lambda q, k, v: _dropout_attention(q, k, v, rng, rate), q, k, v,
                             capsys=capsys)
    assert "f32[2,4,16,16]" in plain


def test_xla_attention_matches_an_independent_formulation():
    q, k, v = _qkv(seed=1)
    ones = jnp.ones((2, 4, 16, 16))
    for dtype in (jnp.float32, jnp.bfloat16):
        args = tuple(x.astype(dtype) for x in (q, k, v))
        want = _reference_attention(*(x.astype(jnp.float32) for x in args), ones, 0.0)
        got = jax.jit(xla_attention)(*args)
        assert got.dtype == dtype
        # bf16: probabilities and output rounded once each, relative error <= 2^-8 each
        tol = 1e-5 if dtype == jnp.float32 else 2 * 2.0 ** -8
        np.testing.assert_allclose(got.astype(jnp.float32), want, rtol=tol, atol=tol)


def _product_shapes(fn, *args):
    """Result shapes of the dot_generals in fn's lowered StableHLO, sorted."""
    text = jax.jit(fn).lower(*args).as_text()
    shapes = re.findall(r"stablehlo\.dot_general.*-> tensor<([0-9x]+)xf32>", text)
    return sorted(tuple(int(n) for n in shape.split("x")) for shape in shapes)


@pytest.mark.parametrize("t,n_blocks,blocks", [(64, 4, 4), (96, 4, 4), (96, 3, 3), (80, 3, 1),
                                               (48, 4, 1)])
def test_attention_by_blocks_matches_the_full_product(t, n_blocks, blocks):
    """Query blocks against the keys up to their last row: values and gradients equal the full
    masked product's, for 4 blocks, 3 blocks, and lengths that fall back to one block (80,
    which 3 does not divide; 48, under 64). Block i of `blocks` multiplies its rows with the
    first i + 1 key blocks only: the key blocks above the diagonal are never multiplied."""
    q, k, v = _qkv((2, t, 4, 16), seed=4)
    rows = t // blocks
    scores = [(2, 4, rows, (i + 1) * rows) for i in range(blocks)]
    values = [(2, 4, rows, 16)] * blocks
    assert _product_shapes(lambda q, k, v: causal_attention_by_blocks(q, k, v, n_blocks),
                           q, k, v) == sorted(scores + values)
    weights = jax.random.normal(jax.random.key(9), (2, t, 4, 16))  # a cotangent, not ones

    def loss(fn):
        return lambda q, k, v: jnp.sum(fn(q, k, v) * weights)

    ones = jnp.ones((2, 4, t, t))
    reference = lambda q, k, v: _reference_attention(q, k, v, ones, 0.0)  # noqa: E731
    blocked = lambda q, k, v: causal_attention_by_blocks(q, k, v, n_blocks)  # noqa: E731
    want, want_grads = jax.value_and_grad(loss(reference), argnums=(0, 1, 2))(q, k, v)
    got, got_grads = jax.jit(jax.value_and_grad(loss(blocked), argnums=(0, 1, 2)))(q, k, v)
    np.testing.assert_allclose(jax.jit(blocked)(q, k, v), reference(q, k, v), rtol=1e-5,
                               atol=1e-6)
    assert float(got) == pytest.approx(float(want), rel=1e-5)
    for a, b in zip(got_grads, want_grads):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(b))))


def test_dropout_masks_same_key_same_mask():
    """Masks depend only on the key: same key, same mask (a resumed run redraws them); another
    key, another mask; the dropped fraction is the rate (binomial, 4 standard deviations)."""
    shape, rate = (4, 8, 64, 64), 0.05
    a = jax.jit(dropout_keep_mask, static_argnums=(1, 2))(jax.random.key(7), rate, shape)
    b = jax.jit(dropout_keep_mask, static_argnums=(1, 2))(jax.random.key(7), rate, shape)
    c = jax.jit(dropout_keep_mask, static_argnums=(1, 2))(jax.random.key(8), rate, shape)
    raw = dropout_keep_mask(jax.random.PRNGKey(7), rate, shape)  # old-style keys work too
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and raw.shape == shape and raw.dtype == bool
    n = a.size
    for mask in (a, c, raw):
        dropped = float(jnp.mean(~mask))
        assert abs(dropped - rate) < 4 * np.sqrt(rate * (1 - rate) / n), dropped
    # rows are not copies of each other (a broken generator repeating one block would be)
    assert not np.array_equal(a[0, 0], a[0, 1]) and not np.array_equal(a[0], a[1])


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_bf16_attention_gradients_close_to_float32(dropout):
    """Same (bf16-representable) inputs and mask, bf16 vs float32 computation. In bf16 the
    probabilities, the output and every gradient matmul's cotangent are rounded to 8 significant
    bits (unit roundoff u = 2^-8) with float32 accumulation: each rounding adds a relative error
    of at most u/2 per element, and the gradients pass through about four of them (output,
    cotangent, probability gradient, score gradient), so their relative RMS error stays below
    2u (measured: output 2.2e-3, gradients 1.8e-3 to 3.4e-3)."""
    u = 2.0 ** -8
    q, k, v = (x.astype(jnp.bfloat16) for x in _qkv((2, 64, 4, 16), seed=2))
    rng = jax.random.key(5) if dropout else None
    attention = ((lambda q, k, v: dropout_attention(q, k, v, rng, dropout)) if dropout
                 else xla_attention)

    def loss(q, k, v):
        out = attention(q, k, v)
        return jnp.sum(jnp.sin(out.astype(jnp.float32))), out

    def run(dtype):
        args = tuple(x.astype(dtype) for x in (q, k, v))
        (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(
            *args)
        return [np.asarray(x, np.float64) for x in (out, *grads)]

    for got, want in zip(run(jnp.bfloat16), run(jnp.float32)):
        rel_rms = np.sqrt(np.mean((got - want) ** 2) / np.mean(want ** 2))
        assert 0 < rel_rms < 2 * u, rel_rms


def _saved_residuals(fn, *args, capsys) -> str:
    from jax.ad_checkpoint import print_saved_residuals

    capsys.readouterr()
    print_saved_residuals(fn, *args)
    return capsys.readouterr().out


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_train_step_lowers_for_cuda_on_a_cpu_machine(dtype):
    """GPU-only lowering errors surface in CI: the XLA-attention train step (with attention
    dropout, i.e. the remat path) exports for CUDA without a GPU."""
    from minillm_jax.train.build import build_run
    from minillm_jax.config import build_config
    from tests.conftest import tiny_config

    config = build_config(tiny_config(compute_dtype=dtype, attention_impl="xla", dropout=0.1))
    run = build_run(config)
    horizon = jax.ShapeDtypeStruct((), jnp.int32)
    exported = jax.export.export(run.train_step(), platforms=["cuda"])(
        run.abstract_state, run.abstract_batch(), horizon)
    assert exported.platforms == ("cuda",)
    assert "stablehlo" in exported.mlir_module()


class FakeDevice:
    platform, device_kind = "gpu", "NVIDIA H100 80GB HBM3"


def test_auto_falls_back_to_xla_when_the_cudnn_probe_fails(monkeypatch):
    """A GPU where cuDNN attention cannot run (simulated: the probe reports a failure): auto
    takes XLA and says why in one line; an explicit cudnn is one ConfigError line."""
    import minillm_jax.model.attention as A

    calls = []

    def failing_probe(device, compute_dtype, head_dim):
        calls.append((device.device_kind, compute_dtype, head_dim))
        return "RuntimeError: cuDNN is not detected."

    monkeypatch.setattr(A, "cudnn_attention_error", failing_probe)
    choice = attention_for_device("auto", "bfloat16", 64, 0.0, device=FakeDevice())
    assert choice.impl == "xla" and calls == [("NVIDIA H100 80GB HBM3", "bfloat16", 64)]
    assert choice.reason == ("auto: cuDNN fused attention failed a test run on NVIDIA H100 80GB "
                             "HBM3 (RuntimeError: cuDNN is not detected.), so XLA attention")
    with pytest.raises(ConfigError, match="failed a test run") as err:
        attention_for_device("cudnn", "bfloat16", 64, 0.0, device=FakeDevice())
    assert "\n" not in str(err.value) and "attention_impl=auto" in str(err.value)
    # no probe where cuDNN is not a candidate; a passing probe keeps cuDNN
    assert attention_for_device("auto", "float32", 64, 0.0, device=FakeDevice()).impl == "xla"
    assert len(calls) == 2
    monkeypatch.setattr(A, "cudnn_attention_error", lambda *args: None)
    assert attention_for_device("auto", "bfloat16", 64, 0.0, device=FakeDevice()) == \
        AttentionChoice("cudnn", "auto: cuDNN fused attention on NVIDIA H100 80GB HBM3 in "
                                 "bfloat16")


def test_cudnn_probe_reports_a_real_failure_without_raising():
    """On this CPU machine cuDNN attention really cannot run: the probe returns one line. Its
    words depend on whether JAX's CUDA plugin is installed (CI installs it for the compile-only
    GPU tests): without it cuDNN is not found, with it the fused kernel has no CPU lowering."""
    from minillm_jax.model.attention import cudnn_attention_error

    error = cudnn_attention_error(jax.devices("cpu")[0], "bfloat16", 64)
    assert error is not None and "\n" not in error, error
    assert "cuDNN" in error or "dot_product_attention" in error, error
