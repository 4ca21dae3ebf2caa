"""Mixture-of-experts layer: routing against a per-token reference, capacity dropping by the
documented priority, dropless grouped matmuls, auxiliary losses, parameter layout and counts."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minillm_jax.model import transformer as M
from minillm_jax.model import moe
from minillm_jax.config import ConfigError
from minillm_jax.model.params_info import active_params, describe
from tests.fast_compile import fast_jit

B, T, C, E, H = 3, 16, 16, 4, 32


def _cfg(**kw):
    base = dict(model="llama", n_layer=1, n_embd=C, n_head=2, vocab_size=64, sequence_length=T,
                block_pattern="attn,moe", moe_n_experts=E, moe_top_k=2, moe_hidden=H)
    base.update(kw)
    return M.ModelConfig(**base)


def _layer_and_params(cfg, seed=0, compile=True):
    """A standalone MoE layer with O(1) random weights (decisive routing, visible outputs)."""
    layer = moe.MoE(cfg, M.ExecutionConfig(), train=False)
    x = jax.random.normal(jax.random.key(seed), (B, T, C))
    shapes = jax.eval_shape(lambda: layer.init(jax.random.key(0), x)["params"])
    leaves, tree = jax.tree.flatten(shapes)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    params = jax.tree.unflatten(tree, [0.5 * jax.random.normal(k, l.shape)
                                       for k, l in zip(keys, leaves)])
    if not compile:
        return None, params, x
    fwd = fast_jit(lambda p, x: layer.apply({"params": p}, x), params, x)  # -> (y, stats)
    return fwd, params, x


def _gelu(v):
    from scipy.special import erf  # noqa: PLC0415 - scipy ships with jax

    return 0.5 * v * (1 + erf(v / math.sqrt(2)))


def _expert(params, style, e, v):
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    if style == "llama":
        h = v @ p["w1"]["kernel"][e]
        h = h / (1 + np.exp(-h)) * (v @ p["w2"]["kernel"][e])
        return h @ p["c_proj"]["kernel"][e]
    h = v @ p["c_fc"]["kernel"][e] + (p["c_fc"]["bias"][e] if "bias" in p["c_fc"] else 0)
    out = _gelu(h) @ p["c_proj"]["kernel"][e]
    return out + (p["c_proj"]["bias"][e] if "bias" in p["c_proj"] else 0)


def _reference(params, x, cfg, cap=None):
    """Per-token loop: top-k of softmax(x @ router), gates (renormalised for k > 1), slots given
    per sequence in the documented priority order; cap=None means nothing is dropped."""
    x = np.asarray(x, np.float64)
    router = np.asarray(params["router"]["kernel"], np.float64)
    k = cfg.moe_top_k
    y = np.zeros_like(x)
    dropped, z = 0, []
    for b in range(x.shape[0]):  # one routing group per sequence
        logits = x[b] @ router
        z += list(np.log(np.exp(logits).sum(-1)) ** 2)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        choices = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
        gates = np.take_along_axis(probs, choices, -1)
        if k > 1:
            gates /= gates.sum(-1, keepdims=True)
        if cfg.moe_priority == "token":
            order = [(s, j) for s in range(x.shape[1]) for j in range(k)]
        else:
            order = [(s, j) for j in range(k) for s in range(x.shape[1])]
        used = np.zeros(cfg.moe_n_experts, int)
        for s, j in order:
            e = choices[s, j]
            if cap is not None and used[e] >= cap:
                dropped += 1
                continue
            used[e] += 1
            y[b, s] += gates[s, j] * _expert(params, cfg.model, e, x[b, s])
    return y, dropped / (x.shape[0] * x.shape[1] * k), float(np.mean(z))


@pytest.mark.parametrize("style,top_k,factor,priority,bias", [
    ("llama", 2, 1.0, "token", False),
    ("llama", 2, 1.0, "choice", False),
    ("gpt", 1, 1.0, "token", True),
    ("llama", 2, 2.0, "token", False),  # capacity = T: nothing can be dropped
])
def test_capacity_routing_matches_reference(style, top_k, factor, priority, bias):
    cfg = _cfg(model=style, moe_top_k=top_k, moe_capacity_factor=factor, moe_priority=priority,
               bias=bias)
    fwd, params, x = _layer_and_params(cfg)
    cap = moe.capacity(T, E, top_k, factor)
    y, stats = fwd(params, x)
    ref, ref_dropped, ref_z = _reference(params, x, cfg, cap)
    if factor < 2.0:
        assert ref_dropped > 0.05  # the case exercises dropping
    else:
        assert ref_dropped == 0.0
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    assert float(stats["dropped_frac"]) == pytest.approx(ref_dropped, abs=1e-6)
    assert float(stats["z_loss"]) == pytest.approx(ref_z, rel=1e-5)
    assert float(jnp.sum(stats["load"])) == pytest.approx(1.0, abs=1e-6)


def test_priorities_drop_different_assignments():
    """Same inputs, same capacity: token order and choice order keep different slots."""
    cfg_t, cfg_c = _cfg(moe_capacity_factor=1.0), _cfg(moe_capacity_factor=1.0,
                                                      moe_priority="choice")
    _, params, x = _layer_and_params(cfg_t, compile=False)
    cap = moe.capacity(T, E, 2, 1.0)
    ref_t = _reference(params, x, cfg_t, cap)[0]
    ref_c = _reference(params, x, cfg_c, cap)[0]
    assert not np.allclose(ref_t, ref_c)


@pytest.mark.parametrize("style,top_k,bias", [("llama", 2, False), ("gpt", 2, True)])
def test_dropless_matches_reference(style, top_k, bias):
    cfg = _cfg(model=style, moe_top_k=top_k, moe_capacity_factor=0.0, bias=bias)
    assert cfg.moe_impl_resolved == "dropless"
    fwd, params, x = _layer_and_params(cfg)
    y, stats = fwd(params, x)
    ref, _, _ = _reference(params, x, cfg, cap=None)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    assert float(stats["dropped_frac"]) == 0.0


def test_slot_positions_by_priority():
    # One group, 3 tokens, top-2 of 2 experts, everyone picks expert 0 first.
    experts = jnp.array([[[0, 1], [0, 1], [0, 1]]])
    mask = jax.nn.one_hot(experts, 2, dtype=jnp.int32)
    np.testing.assert_array_equal(moe.slot_positions(mask, "token")[0], [[0, 0], [1, 1], [2, 2]])
    np.testing.assert_array_equal(moe.slot_positions(mask, "choice")[0], [[0, 0], [1, 1], [2, 2]])
    experts = jnp.array([[[0, 1], [1, 0], [0, 1]]])
    mask = jax.nn.one_hot(experts, 2, dtype=jnp.int32)
    # token order: (0,e0) (0,e1) (1,e1) (1,e0) (2,e0) (2,e1)
    np.testing.assert_array_equal(moe.slot_positions(mask, "token")[0], [[0, 0], [1, 1], [2, 2]])
    # choice order: top-1s (0,e0) (1,e1) (2,e0), then top-2s (0,e1) (1,e0) (2,e1)
    np.testing.assert_array_equal(moe.slot_positions(mask, "choice")[0], [[0, 1], [0, 2], [1, 2]])
    assert moe.capacity(16, 4, 2, 1.0) == 8 and moe.capacity(16, 4, 2, 100.0) == 16


def test_aux_loss_is_one_for_uniform_routing():
    probs = jnp.full((2, 8, E), 1.0 / E)
    experts = jnp.stack([jnp.arange(16) % E, (jnp.arange(16) + 1) % E], -1).reshape(2, 8, 2)
    aux, load = moe.load_balancing_loss(probs, jax.nn.one_hot(experts, E))
    assert float(aux) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(load, 1.0 / E, atol=1e-7)
    # Collapsed routing (every token, all probability on expert 0): n_experts.
    collapsed = jax.nn.one_hot(jnp.zeros((2, 8), jnp.int32), E)
    aux, _ = moe.load_balancing_loss(collapsed, collapsed[..., None, :])
    assert float(aux) == pytest.approx(E)


def test_zero_router_gives_uniform_probabilities_and_aux_one():
    cfg = _cfg()
    fwd, params, x = _layer_and_params(cfg)
    params = {**params, "router": {"kernel": jnp.zeros_like(params["router"]["kernel"])}}
    _, stats = fwd(params, x)
    assert float(stats["aux_loss"]) == pytest.approx(1.0, abs=1e-6)
    assert float(stats["z_loss"]) == pytest.approx(math.log(E) ** 2, rel=1e-6)


def test_param_layout_and_active_counts():
    cfg = M.ModelConfig(model="llama", n_layer=3, n_embd=64, n_head=4, vocab_size=256,
                        sequence_length=16, block_pattern="attn,moe", moe_n_experts=8,
                        moe_top_k=2, moe_hidden=96)
    params = M.abstract_params(M.Transformer(cfg))
    blocks = params["blocks"]
    assert blocks["moe"]["router"]["kernel"].shape == (3, 64, 8)
    assert blocks["moe"]["w1"]["kernel"].shape == (3, 8, 64, 96)
    assert blocks["moe"]["w2"]["kernel"].shape == (3, 8, 64, 96)
    assert blocks["moe"]["c_proj"]["kernel"].shape == (3, 8, 96, 64)
    total = M.num_params(params, cfg)
    experts = 3 * 8 * 3 * 64 * 96
    assert active_params(params, cfg) == total - experts * 6 // 8
    assert "active per token" in describe(params, cfg)
    gpt = M.ModelConfig(**{**cfg.__dict__, "model": "gpt", "bias": True, "moe_top_k": 1,
                           "mlp_activation": "auto"})
    blocks = M.abstract_params(M.Transformer(gpt))["blocks"]["moe"]
    assert blocks["c_fc"]["kernel"].shape == (3, 8, 64, 96)
    assert blocks["c_fc"]["bias"].shape == (3, 8, 96)
    assert blocks["c_proj"]["bias"].shape == (3, 8, 64)


def test_config_files_counts():
    """configs/moe.py is compute-matched with best.py; brainformer has 3 MoE sublayers/block."""
    from minillm_jax.config import build_config, load_config
    from tests.conftest import REPO

    counts = {}
    for name in ("best", "moe", "brainformer"):
        cfg = build_config(load_config(REPO / "configs" / f"{name}.py")).model
        params = M.abstract_params(M.Transformer(cfg))
        counts[name] = (M.num_params(params, cfg), active_params(params, cfg))
    assert counts["best"] == (166_063_872, 166_063_872)
    router = 18 * 768 * 8
    assert counts["moe"][1] == 166_063_872 + router  # two half-width experts = the dense MLP
    assert counts["moe"][0] == 166_063_872 + router + 18 * 6 * 3 * 768 * 1024
    assert counts["brainformer"][0] > counts["brainformer"][1]


@pytest.mark.parametrize("overrides,match", [
    (dict(block_pattern="attn,ffn"), "block_pattern"),
    (dict(block_pattern="attn,moe", moe_top_k=9), "moe_top_k"),
    (dict(block_pattern="attn,moe", moe_impl="einsum", moe_capacity_factor=0.0), "dropless"),
    (dict(block_pattern="attn,moe", moe_priority="random"), "moe_priority"),
])
def test_bad_architecture_configs_are_rejected(overrides, match):
    with pytest.raises(ConfigError, match=match):
        M.ModelConfig(**overrides)
