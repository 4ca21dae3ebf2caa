"""value_embeddings and smear (minillm_jax/model/token_embedding_options.py, modded-nanogpt):
the model against a forward pass written here in numpy from the parameters, with every gate and
lambda away from its init; off = the plain model; KV cache == full forward; config checks;
optimizer treatment; export refusals."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minillm_jax.config import ConfigError
from minillm_jax.model import transformer as M
from tests.fast_compile import FAST_COMPILE

# gpt, 3 layers: value_embeddings=1 feeds layers 0 and 2, layer 1 has none
TINY = dict(model="gpt", n_layer=3, n_embd=32, n_head=4, vocab_size=64, sequence_length=16)


def _model(scan=True, remat="none", **kw):
    cfg = M.ModelConfig(**{**TINY, **kw})
    return M.Transformer(cfg, M.ExecutionConfig(scan_layers=scan, remat=remat))


def _perturbed(model, seed=0):
    """Init parameters with the options' gates, lambda and tables far from their init."""
    params = jax.tree.map(np.array, M.init_params(model, jax.random.key(seed)))
    rng = np.random.default_rng(seed)
    if "smear" in params:
        params["smear"] = {"gate": rng.normal(0, 1.0, (12,)).astype(np.float32),
                           "lambda": np.float32(0.8)}
    if "value_embeds" in params:
        params["value_embeds"]["embedding"] *= 30  # N(0, 0.3): comparable to the values
        gate = params["blocks"]["attn"]["ve_gate"]
        params["blocks"]["attn"]["ve_gate"] = rng.normal(0, 1.0, gate.shape).astype(np.float32)
    return params


def _ln(x, scale):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-5) * scale


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _reference_logits(p, idx, k, smear):
    """The gpt model (no bias) by hand: smear on the embeddings, value embedding table j in
    layers j and n-k+j gated per head by 2 sigmoid([h[:6], ve[:6]] @ ve_gate)."""
    n, c, nh = TINY["n_layer"], TINY["n_embd"], TINY["n_head"]
    b, t = idx.shape
    d = c // nh
    x = p["wte"]["embedding"][idx] + p["wpe"]["embedding"][:t][None]
    if smear:
        gate, lam = p["smear"]["gate"], p["smear"]["lambda"]
        prev = np.concatenate([np.zeros_like(x[:, :1]), x[:, :-1]], 1)
        x = x + lam * _sigmoid(x[..., :12] @ gate)[..., None] * prev
    tables = {j: j for j in range(k)} | {n - k + j: j for j in range(k)}
    blk = p["blocks"]
    for layer in range(n):
        h = _ln(x, blk["ln_1"]["scale"][layer])
        q, kk, v = np.split(h @ blk["attn"]["c_attn"]["kernel"][layer], 3, -1)
        q, kk, v = (z.reshape(b, t, nh, d) for z in (q, kk, v))
        if layer in tables:
            ve = p["value_embeds"]["embedding"][tables[layer]][idx]
            g = 2 * _sigmoid(np.concatenate([h[..., :6], ve[..., :6]], -1)
                             @ blk["attn"]["ve_gate"][layer])
            v = v + g[..., None] * ve.reshape(b, t, nh, d)
        s = np.einsum("bqhd,bkhd->bhqk", q, kk) / np.sqrt(d)
        s = np.where(np.tril(np.ones((t, t), bool)), s, -np.inf)
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        y = np.einsum("bhqk,bkhd->bqhd", a, v).reshape(b, t, c)
        x = x + y @ blk["attn"]["c_proj"]["kernel"][layer]
        h = _ln(x, blk["ln_2"]["scale"][layer]) @ blk["mlp"]["c_fc"]["kernel"][layer]
        x = x + np.asarray(jax.nn.gelu(h, approximate=False)) @ blk["mlp"]["c_proj"]["kernel"][layer]
    return _ln(x, p["ln_f"]["scale"]) @ p["wte"]["embedding"].T


@pytest.mark.parametrize("k,smear,scan,remat", [(1, True, True, "save_named"),
                                                (1, True, False, "full")])
def test_forward_equals_hand_written_reference(k, smear, scan, remat):
    model = _model(scan, remat, value_embeddings=k, smear=smear)
    params = _perturbed(model)
    idx = np.random.default_rng(1).integers(0, 64, (2, 16))
    got = np.asarray(jax.jit(model.apply, compiler_options=FAST_COMPILE)(
        {"params": params}, jnp.asarray(idx)))
    want = _reference_logits(jax.tree.map(lambda a: np.asarray(a, np.float64), params), idx,
                             k, smear)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4)
    # each option changes the logits (so the comparison above can fail)
    p64 = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    assert np.abs(want - _reference_logits(p64, idx, 0, smear)).max() > 1e-2
    assert np.abs(want - _reference_logits(p64, idx, k, False)).max() > 1e-2


def test_options_off_is_the_plain_model():
    """Off: the llm-baselines parameter tree and count; on with zero tables and lambda: the same
    logits as the plain model on the shared parameters."""
    plain = _model()
    params = jax.tree.map(np.array, M.init_params(plain, jax.random.key(0)))
    c, v, n, s = TINY["n_embd"], TINY["vocab_size"], TINY["n_layer"], TINY["sequence_length"]
    assert M.count_params(params) == v * c + s * c + n * (2 * c + 12 * c * c) + c
    assert set(params) == {"wte", "wpe", "blocks", "ln_f"}
    assert set(params["blocks"]["attn"]) == {"c_attn", "c_proj"}
    both = _model(value_embeddings=1, smear=True)
    shapes = jax.tree.map(lambda a: a.shape, M.abstract_params(both))
    assert shapes["value_embeds"] == {"embedding": (1, 64, 32)}
    assert shapes["smear"] == {"gate": (12,), "lambda": ()}
    assert shapes["blocks"]["attn"]["ve_gate"] == (3, 12, 4)
    full = jax.tree.map(np.copy, params)
    full["blocks"]["attn"]["ve_gate"] = np.ones((3, 12, 4), np.float32)
    full["value_embeds"] = {"embedding": np.zeros((1, 64, 32), np.float32)}
    full["smear"] = {"gate": np.ones(12, np.float32), "lambda": np.float32(0.0)}
    idx = jnp.asarray(np.random.default_rng(2).integers(0, 64, (2, 16)))
    run = lambda m, p: jax.jit(m.apply, compiler_options=FAST_COMPILE)({"params": p}, idx)  # noqa: E731
    np.testing.assert_allclose(run(both, full), run(plain, params), atol=1e-6)


def test_kv_cache_logits_equal_full_forward():
    """Bucket-padded prefill, then one token at a time: every position's logits equal the full
    forward pass's (smear reads the previous position from cache/smear/previous)."""
    from minillm_jax.model import generation as G

    model = _model(True, model="llama", smear=True, value_embeddings=1, weighted_residual=True)
    params = _perturbed(model)
    tokens = jnp.asarray(np.random.default_rng(3).integers(0, 64, (1, 16)))
    fast = lambda f: jax.jit(f, compiler_options=FAST_COMPILE)  # noqa: E731
    full = fast(lambda p, x: model.apply({"params": p}, x))(params, tokens)[0]

    @fast
    def decode(params, cache, x, pos):
        variables = {"params": params} | ({"cache": cache} if cache is not None else {})
        f, v = model.apply(variables, x, pos, method=M.Transformer.decode, mutable=["cache"])
        return M.head_logits(f.hidden, f.head, 0.0)[0], v["cache"]

    n = 5
    padded = jnp.zeros((1, G.prompt_bucket(n, 16)), jnp.int32).at[:, :n].set(tokens[:, :n])
    logits, cache = decode(params, None, padded, 0)
    assert cache["smear"]["previous"].shape == (1, 16, 32)
    np.testing.assert_allclose(logits[:n], full[:n], atol=1e-5, rtol=1e-5)
    for pos in range(n, 16):
        logits, cache = decode(params, cache, tokens[:, pos:pos + 1], pos)
        np.testing.assert_allclose(logits[0], full[pos], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kw,field", [(dict(value_embeddings=2), "value_embeddings"),
                                      (dict(value_embeddings=-1), "value_embeddings"),
                                      (dict(smear=True, n_embd=8, n_head=2), "n_embd")])
def test_config_is_checked_in_one_line(kw, field):
    with pytest.raises(ConfigError) as err:
        M.ModelConfig(**{**TINY, **kw})
    assert "\n" not in str(err.value) and f"config.{field}=" in str(err.value)


def test_adamw_without_weight_decay_updates_the_new_parameters():
    from minillm_jax.optim.factory import decay_mask
    from minillm_jax.optim.muon import muon_labels

    params = M.abstract_params(_model(value_embeddings=1, smear=True))
    labels, decay = muon_labels(params), decay_mask(params)
    for tree in (labels, decay):
        new = [tree["value_embeds"]["embedding"], tree["blocks"]["attn"]["ve_gate"],
               tree["smear"]["gate"], tree["smear"]["lambda"]]
        assert new == (["adam"] * 4 if tree is labels else [False] * 4)
    assert labels["blocks"]["attn"]["c_attn"]["kernel"] == "muon"


def test_llm_baselines_and_stock_hf_refuse_in_one_line():
    from minillm_jax.export import ConversionError
    from minillm_jax.export.architectures import lookup, stock_hf_entry

    for kw, word in ((dict(value_embeddings=1), "value_embeddings"), (dict(smear=True), "smear")):
        cfg = M.ModelConfig(**{**TINY, **kw})
        with pytest.raises(ConversionError) as err:
            lookup(cfg, "llm-baselines")
        assert "\n" not in str(err.value) and word in str(err.value)
        assert stock_hf_entry(cfg)[0] is None and lookup(cfg, "hf").name.startswith("MiniLLM")
