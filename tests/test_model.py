"""Architecture facts of GPTBase and Llama (docs/llm-baselines.md#gptbase-architecture-and-initialisation)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minillm_jax.model import layers as L
from minillm_jax.model import transformer as M


@pytest.mark.parametrize("name,n_layer,expected", [
    ("gpt", 24, 208_540_416), ("llama", 24, 208_540_416), ("llama", 18, 166_063_872),
    ("gpt", 12, 123_587_328), ("gpt", 18, 166_063_872)])
def test_parameter_counts_match_llm_baselines(name, n_layer, expected):
    cfg = M.ModelConfig(model=name, n_layer=n_layer)
    params = M.abstract_params(M.Transformer(cfg))  # shapes only, nothing allocated
    assert M.num_params(params, cfg) == expected


def test_best_config_count():
    from minillm_jax.config import build_config, load_config
    from tests.conftest import REPO

    cfg = build_config(load_config(REPO / "configs" / "best.py")).model
    assert M.num_params(M.abstract_params(M.Transformer(cfg)), cfg) == 166_063_872


@pytest.mark.parametrize("c,hidden", [(768, 2048), (128, 512), (256, 768), (512, 1536),
                                      (1024, 2816)])
def test_swiglu_hidden_size_rule(c, hidden):
    assert M.ModelConfig(model="llama", n_embd=c, n_head=4).mlp_hidden == hidden


def _fwd(model, train=False):
    """Jitted forward (eager op-by-op dispatch is slow)."""
    return jax.jit(lambda p, x, rng=None: model.apply(
        {"params": p}, x, train=train, rngs={"dropout": rng} if train else None))


def _tiny(**kw):
    base = dict(model="gpt", n_layer=2, n_embd=32, n_head=4, vocab_size=128, sequence_length=16)
    base.update(kw)
    cfg = M.ModelConfig(**base)
    model = M.Transformer(cfg)
    return cfg, model, M.init_params(model, jax.random.key(0))


@pytest.mark.parametrize("name", ["gpt", "llama"])
def test_shapes_and_layout(name):
    cfg, model, params = _tiny(model=name, bias=True)
    blocks = params["blocks"]
    assert blocks["attn"]["c_attn"]["kernel"].shape == (2, 32, 96)
    assert blocks["attn"]["c_attn"]["bias"].shape == (2, 96)
    assert ("wpe" in params) == (name == "gpt")
    idx = jax.random.randint(jax.random.key(1), (3, 16), 0, 128)
    assert _fwd(model)(params, idx).shape == (3, 16, 128)


def test_init_statistics():
    cfg = M.ModelConfig(model="gpt", n_layer=4, n_embd=256, n_head=4, vocab_size=4096)
    params = M.init_params(M.Transformer(cfg), jax.random.key(0))
    std = lambda x: float(jnp.std(x))  # noqa: E731
    assert std(params["wte"]["embedding"]) == pytest.approx(0.02, rel=0.02)
    assert std(params["blocks"]["mlp"]["c_fc"]["kernel"]) == pytest.approx(0.02, rel=0.02)
    assert std(params["blocks"]["mlp"]["c_proj"]["kernel"]) == pytest.approx(
        0.02 / math.sqrt(8), rel=0.03)
    np.testing.assert_array_equal(params["blocks"]["ln_1"]["scale"], 1.0)


@pytest.mark.parametrize("name", ["gpt", "llama"])
def test_causal(name):
    """Changing a later token never changes earlier logits."""
    _, model, params = _tiny(model=name)
    idx = jax.random.randint(jax.random.key(1), (1, 16), 0, 128)
    changed = idx.at[0, 10].set((idx[0, 10] + 1) % 128)
    a = _fwd(model)(params, idx)
    b = _fwd(model)(params, changed)
    np.testing.assert_allclose(a[0, :10], b[0, :10], rtol=1e-6, atol=1e-6)
    assert not np.allclose(a[0, 10:], b[0, 10:])


def test_rope_is_interleaved_complex_rotation():
    """RoPE equals multiplying complex pairs (x[2j] + i x[2j+1]) by exp(i t theta_j)."""
    x = jax.random.normal(jax.random.key(0), (1, 8, 2, 16))
    cos, sin = L.rope_tables(8, 16, 10000.0)
    out = np.asarray(L.apply_rope(x, cos, sin))
    xc = np.asarray(x[..., 0::2]) + 1j * np.asarray(x[..., 1::2])
    freqs = 1.0 / 10000.0 ** (np.arange(0, 16, 2) / 16)
    rot = xc * np.exp(1j * np.arange(8)[None, :, None, None] * freqs)
    expected = np.stack([rot.real, rot.imag], -1).reshape(x.shape)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_layernorm_and_rmsnorm_eps():
    x = jax.random.normal(jax.random.key(0), (2, 5, 32)) * 3 + 1
    ln = L.LayerNorm(1e-5, False, jnp.float32)
    y = ln.apply(ln.init(jax.random.key(0), x), x)
    xn = np.asarray(x)
    ref = (xn - xn.mean(-1, keepdims=True)) / np.sqrt(xn.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    rms = L.RMSNorm(1e-5)
    y = rms.apply(rms.init(jax.random.key(0), x), x)
    np.testing.assert_allclose(y, xn / np.sqrt((xn**2).mean(-1, keepdims=True) + 1e-5),
                               rtol=1e-5, atol=1e-5)


def test_scan_and_unrolled_give_same_logits():
    _, model, params = _tiny(model="llama")
    unrolled = M.Transformer(model.cfg, M.ExecutionConfig(scan_layers=False))
    idx = jax.random.randint(jax.random.key(1), (2, 16), 0, 128)
    np.testing.assert_allclose(_fwd(model)(params, idx), _fwd(unrolled)(params, idx),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("remat", ["full", "save_dots"])
def test_remat_policies_keep_gradients(remat):
    """Gradients through (rematerialised) blocks equal those of an independent implementation:
    tests/export/torch_reference.py, PyTorch autograd of llm-baselines' GPTBase, on random
    weights far from the init."""
    import torch

    from minillm_jax import export
    from minillm_jax.model.losses import cross_entropy
    from tests.export import torch_reference
    from tests.export.common import batch, random_params, rel_err, tiny_config

    config = tiny_config("gpt")
    params, (idx, targets) = random_params(config), batch(config)
    net = M.Transformer(M.ModelConfig.from_flat(config.to_dict()), M.ExecutionConfig(remat=remat))
    loss = lambda p: cross_entropy(  # noqa: E731
        net.apply({"params": p}, jnp.asarray(idx, jnp.int32)), jnp.asarray(targets)).mean()
    grads, _ = export.export_arrays(jax.jit(jax.grad(loss))(params), config, "llm-baselines")

    args, _ = export.llm_baselines.args_for(config)
    ref = torch_reference.build(args)
    state, _ = export.llm_baselines.to_torch(params, config)
    ref.load_state_dict(state, strict=True)
    ref.eval()
    ref(torch.from_numpy(idx), torch.from_numpy(targets))["loss"].backward()
    for name, p in ref.named_parameters():
        assert rel_err(grads[name], p.grad.numpy()) < 1e-4, name


@pytest.mark.parametrize("name", ["gpt", "llama"])
def test_bf16_compute_close_to_float32(name):
    """bfloat16 matmul inputs with a float32 residual stream, norms, softmax and logits.

    bf16 keeps 8 significant bits: rounding an operand costs a relative error of at most
    u = 2^-8 (~3.9e-3), so a dot product of two rounded operands is off by about sqrt(2) u in
    RMS terms. The logits come out of a few such products in a row (2 layers here), whose errors
    add roughly in quadrature; bound the relative RMS error by 2u (7.8e-3; measured 2.2e-3 for
    llama, 2.6e-3 for gpt) and the worst logit by 0.05 logit std (measured 0.01). A bf16
    residual stream rounds the running sum too and is measurably less accurate (4.2e-3 / 4.5e-3).
    """
    u = 2.0 ** -8
    cfg, model, params = _tiny(model=name)
    idx = jax.random.randint(jax.random.key(1), (2, 16), 0, 128)
    ref = np.asarray(_fwd(model)(params, idx), np.float64)

    def rel_rms(residual):
        bf16 = M.Transformer(cfg, M.ExecutionConfig(compute_dtype="bfloat16",
                                                     residual_dtype=residual))
        out = _fwd(bf16)(params, idx)
        assert out.dtype == jnp.float32
        err = np.asarray(out, np.float64) - ref
        assert np.abs(err).max() < 0.05 * ref.std()
        return np.sqrt(np.mean(err ** 2) / np.mean(ref ** 2))

    f32_residual, bf16_residual = rel_rms("float32"), rel_rms("bfloat16")
    assert 0 < f32_residual < 2 * u
    assert f32_residual < bf16_residual < 4 * u


def test_attention_dropout_only_in_training():
    cfg, model, params = _tiny(model="gpt", dropout=0.1, attention_dropout=0.1)
    idx = jax.random.randint(jax.random.key(1), (2, 16), 0, 128)
    e1 = _fwd(model)(params, idx)
    e2 = _fwd(model)(params, idx)
    np.testing.assert_array_equal(e1, e2)  # eval is deterministic (llm-baselines' is not)
    train = _fwd(model, train=True)
    t1 = train(params, idx, jax.random.key(1))
    t2 = train(params, idx, jax.random.key(2))
    assert not np.allclose(t1, t2)


def test_sequence_longer_than_table_is_rejected():
    """Checked before tracing (the model itself raises no configuration errors)."""
    from minillm_jax.config import ConfigError, check_sequence_fits

    cfg, _, _ = _tiny()
    check_sequence_fits(cfg, 16)
    with pytest.raises(ConfigError, match="longer than sequence_length=16"):
        check_sequence_fits(cfg, 17)


def test_qk_norm_makes_attention_blind_to_query_and_key_scale():
    """RMSNorm per head on q and k (learned scales (n_layer, head_dim)): scaling the query and key
    projections changes nothing; without qk_norm it changes the logits."""
    idx = jax.random.randint(jax.random.key(1), (2, 16), 0, 128)
    for qk_norm in (True, False):
        # eps far below mean(q^2), so the norm removes the scale exactly up to rounding
        cfg, model, params = _tiny(model="llama", qk_norm=qk_norm, rmsnorm_eps=1e-12)
        kernel = params["blocks"]["attn"]["c_attn"]["kernel"]  # (n, C, 3C): q | k | v
        scaled = kernel.at[:, :, :64].multiply(3.0)  # q and k columns
        other = {**params, "blocks": {**params["blocks"], "attn": {
            **params["blocks"]["attn"], "c_attn": {"kernel": scaled}}}}
        a, b = _fwd(model)(params, idx), _fwd(model)(other, idx)
        if qk_norm:
            assert params["blocks"]["attn"]["q_norm"]["scale"].shape == (2, 8)
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        else:
            assert not np.allclose(a, b, atol=1e-3)


def test_relu2_mlp_matches_a_reference_computation():
    cfg = M.ModelConfig(model="llama", n_layer=1, n_embd=32, n_head=4, vocab_size=128,
                        sequence_length=16, mlp_activation="relu2")
    assert cfg.mlp_hidden == 128  # 4C, like GPT's MLP
    mlp = L.MLP(cfg, M.ExecutionConfig(), train=False)
    x = jax.random.normal(jax.random.key(0), (2, 5, 32))
    params = mlp.init(jax.random.key(1), x)["params"]
    got = mlp.apply({"params": params}, x)
    h = np.asarray(x) @ np.asarray(params["c_fc"]["kernel"])
    want = np.maximum(h, 0) ** 2 @ np.asarray(params["c_proj"]["kernel"])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert set(params) == {"c_fc", "c_proj"}


@pytest.mark.parametrize("name", ["gpt", "llama"])
def test_zero_init_proj_makes_every_block_the_identity_at_init(name):
    cfg = M.ModelConfig(model=name, n_layer=2, n_embd=32, n_head=4, vocab_size=128,
                        sequence_length=16, zero_init_proj=True, bias=True)
    block = M.Block(cfg, M.ExecutionConfig(), train=False)
    x = jax.random.normal(jax.random.key(0), (2, 16, 32))
    params = block.init(jax.random.key(1), x)["params"]
    out, _ = block.apply({"params": params}, x)
    np.testing.assert_array_equal(out, x)
    assert float(jnp.abs(params["mlp"]["c_fc" if name == "gpt" else "w1"]["kernel"]).max()) > 0


def test_logit_softcap_bounds_the_logits():
    cfg, model, params = _tiny(model="gpt", logit_softcap=2.0)
    plain = M.Transformer(M.ModelConfig(**{**cfg.__dict__, "logit_softcap": 0.0}))
    big = jax.tree.map(lambda p: p * 20.0, params)  # raw logits far beyond the cap
    idx = jax.random.randint(jax.random.key(1), (2, 16), 0, 128)
    capped, raw = _fwd(model)(big, idx), _fwd(plain)(big, idx)
    assert float(jnp.abs(raw).max()) > 10.0
    assert float(jnp.abs(capped).max()) <= 2.0
    np.testing.assert_allclose(capped, 2.0 * np.tanh(np.asarray(raw) / 2.0), rtol=1e-5,
                               atol=1e-5)


def test_config_names_exactly_the_block_types_the_model_builds():
    from minillm_jax.config import SUBLAYER_KINDS

    assert sorted(M._sublayer_types()) == sorted(SUBLAYER_KINDS)
