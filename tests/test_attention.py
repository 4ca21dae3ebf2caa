"""Attention kernels: the choice per device, the rematerialised dropout path, CUDA lowering."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minillm_jax.attention import _dropout_attention, choose_attention, dropout_attention
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


def test_rematerialised_dropout_attention_equals_plain_in_value_and_gradients(capsys):
    """Same key, same mask: the remat path computes the same function and gradients while
    saving only its inputs for the backward pass."""
    keys = jax.random.split(jax.random.key(0), 4)
    q, k, v = (jax.random.normal(key, (2, 16, 4, 8)) for key in keys[:3])
    rng = keys[3]

    def loss(fn):
        return jax.jit(jax.value_and_grad(
            lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v, rng, 0.1))), argnums=(0, 1, 2)))

    (a, grads_a), (b, grads_b) = loss(_dropout_attention)(q, k, v), loss(dropout_attention)(q, k, v)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    for ga, gb in zip(grads_a, grads_b):
        np.testing.assert_allclose(ga, gb, rtol=1e-5, atol=1e-6)
    # the remat path keeps no (B, H, T, T) residual for the backward pass, the plain one does
    saved = _saved_residuals(lambda q, k, v: dropout_attention(q, k, v, rng, 0.1), q, k, v,
                             capsys=capsys)
    assert "[2,4,16,16]" not in saved and saved.count("from the argument") == 3
    plain = _saved_residuals(lambda q, k, v: _dropout_attention(q, k, v, rng, 0.1), q, k, v,
                             capsys=capsys)
    assert "f32[2,4,16,16]" in plain


def _saved_residuals(fn, *args, capsys) -> str:
    from jax.ad_checkpoint import print_saved_residuals

    capsys.readouterr()
    print_saved_residuals(fn, *args)
    return capsys.readouterr().out


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_train_step_lowers_for_cuda_on_a_cpu_machine(dtype):
    """GPU-only lowering errors surface in CI: the XLA-attention train step (with attention
    dropout, i.e. the remat path) exports for CUDA without a GPU."""
    from minillm_jax.build import build_run
    from minillm_jax.config import build_config
    from tests.conftest import tiny_config

    config = build_config(tiny_config(compute_dtype=dtype, attention_impl="xla", dropout=0.1))
    run = build_run(config)
    horizon = jax.ShapeDtypeStruct((), jnp.int32)
    exported = jax.export.export(run.train_step(), platforms=["cuda"])(
        run.abstract_state, run.abstract_batch(), horizon)
    assert exported.platforms == ("cuda",)
    assert "stablehlo" in exported.mlir_module()
