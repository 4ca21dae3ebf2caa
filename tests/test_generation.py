"""minillm_jax.model.generation: the KV-cache path equals the no-cache recompute path (greedy, sampled,
past sequence_length), the cache's logits equal the full forward's, sampling is reproducible
and never produces padded vocabulary ids."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minillm_jax.model import generation as G
from minillm_jax.model import transformer as M
from tests.fast_compile import FAST_COMPILE

SEQ = 16
# init_std 0.3: peaked enough that greedy decoding of a random model does not repeat one token.
TINY = dict(n_layer=2, n_embd=32, n_head=4, vocab_size=128, sequence_length=SEQ, init_std=0.3)


# generation's programs, compiled with LLVM optimisations off (tests/fast_compile.py): compiling
# dominates these tests. Both paths get the same options.
_JITTED = {"_prefill": (), "_decode_loop": (), "_window_step": ("window",), "_next_token": ()}
_FAST = {name: jax.jit(getattr(G, name).__wrapped__, static_argnames=("model", "top_k"),
                       donate_argnames=donate, compiler_options=FAST_COMPILE)
         for name, donate in _JITTED.items()}


@pytest.fixture(autouse=True)
def fast_compile(monkeypatch):
    for name, fn in _FAST.items():
        monkeypatch.setattr(G, name, fn)


def _model(scan: bool = True, remat: str = "none", **kw):
    cfg = M.ModelConfig(**{**TINY, **kw})
    model = M.Transformer(cfg, M.ExecutionConfig(scan_layers=scan, remat=remat))
    return model, M.init_params(model, jax.random.key(0))


def _skip_weights(params: dict) -> dict:
    """Non-zero U-net skip weights (zero at init) where the model has them."""
    if "unet_skip_weights" in params:
        params = {**params, "unet_skip_weights": params["unet_skip_weights"] + 0.8}
    return params


def _prompt(n: int) -> list[int]:
    return np.random.default_rng(n).integers(0, 128, n).tolist()


# (model options, scan_layers, prompt length, past sequence_length?). Compiling dominates: few
# cases. "past": 4 tokens beyond sequence_length (the sliding window, one more program); else the
# last new token sees exactly sequence_length tokens (the cache's last row).
CASES = {
    "gpt_scan_qknorm_softcap": (dict(model="gpt", qk_norm=True, logit_softcap=3.0), True, 5, True),
    "gpt_unrolled": (dict(model="gpt"), False, 3, False),
    "llama_unrolled_long_prompt": (dict(model="llama", qk_norm=True), False, SEQ + 4, True),
    # llama with scan: here and in the sampled test below
    "llama_dropless_moe_weighted_residual_remat": (
        dict(model="llama", block_pattern="attn,moe", moe_n_experts=4, moe_top_k=2,
             moe_capacity_factor=0.0, weighted_residual=True), True, 4, False),
}


@pytest.mark.parametrize("name", list(CASES))
def test_greedy_kv_cache_equals_full_recompute(name):
    kw, scan, prompt_len, past = CASES[name]
    model, params = _model(scan, remat="full" if "remat" in name else "none", **kw)
    assert G.kv_cache_problem(model.cfg) is None
    prompt = _prompt(prompt_len)
    n_new = SEQ + (4 if past else 1) - min(prompt_len, SEQ)
    cached = G.generate_tokens(model, params, prompt, max_new_tokens=n_new, temperature=0.0)
    reference = G.generate_tokens_reference(model, params, prompt, max_new_tokens=n_new,
                                            temperature=0.0)
    assert cached == reference
    assert len(cached) == n_new and len(set(cached)) > 3  # not a degenerate repetition


def test_sampled_kv_cache_equals_full_recompute_and_is_reproducible():
    model, params = _model(True, model="llama", logit_softcap=3.0)
    prompt = _prompt(6)
    kw = dict(max_new_tokens=SEQ, temperature=1.5, top_k=20)
    first = G.generate_tokens(model, params, prompt, seed=3, **kw)
    assert G.generate_tokens(model, params, prompt, seed=3, **kw) == first
    assert G.generate_tokens_reference(model, params, prompt, seed=3, **kw) == first
    assert G.generate_tokens(model, params, prompt, seed=4, **kw) != first
    # text in, text out: the prompt and its continuation
    text = G.generate(model, params, "ROMEO:", max_new_tokens=5, temperature=1.5, top_k=20, seed=3)
    assert text.startswith("ROMEO:")
    assert text == G.generate(model, params, "ROMEO:", max_new_tokens=5, temperature=1.5,
                              top_k=20, seed=3)


@pytest.mark.parametrize("kw,scan", [(dict(model="gpt", qk_norm=True, logit_softcap=3.0), False),
                                     (dict(model="llama", qk_norm=True, logit_softcap=3.0), True),
                                     (dict(model="gpt", unet_skips=True, attention_window=3,
                                           attention_window_layers="all_but_last"), True)])
def test_cache_logits_equal_full_forward(kw, scan):
    """Prefill of a bucket-padded prompt, then one token at a time: the logits at every position
    equal the full forward pass's (teacher forcing); with a window of 3 the cache mask is banded
    (positions >= 3 differ otherwise)."""
    model, params = _model(scan, **kw)
    params = _skip_weights(params)
    tokens = jnp.asarray(_prompt(SEQ))[None]
    fast = lambda f: jax.jit(f, compiler_options=FAST_COMPILE)  # noqa: E731
    full = fast(lambda p, x: model.apply({"params": p}, x))(params, tokens)[0]

    @fast
    def prefill(params, padded):
        f, v = model.apply({"params": params}, padded, 0, method=M.Transformer.decode,
                           mutable=["cache"])
        return M.head_logits(f.hidden, f.head, model.cfg.logit_softcap)[0], v["cache"]

    @fast
    def step(params, cache, token, pos):
        f, v = model.apply({"params": params, "cache": cache}, token, pos,
                           method=M.Transformer.decode, mutable=["cache"])
        return M.head_logits(f.hidden, f.head, model.cfg.logit_softcap)[0, 0], v["cache"]

    n = 5
    padded = jnp.zeros((1, G.prompt_bucket(n, SEQ)), jnp.int32).at[:, :n].set(tokens[:, :n])
    logits, cache = prefill(params, padded)
    assert jax.tree.leaves(cache)[0].shape == (2, 1, SEQ, 4, 8)  # (n_layer, B, L, nh, hs)
    np.testing.assert_allclose(logits[:n], full[:n], atol=1e-5, rtol=1e-5)
    for pos in range(n, SEQ):
        logits, cache = step(params, cache, tokens[:, pos:pos + 1], pos)
        np.testing.assert_allclose(logits, full[pos], atol=1e-5, rtol=1e-5)


def test_capacity_moe_falls_back_to_recompute(monkeypatch):
    model, params = _model(True, model="llama", block_pattern="attn,moe", moe_n_experts=4,
                           moe_top_k=1, moe_capacity_factor=1.0)
    assert "capacity" in G.kv_cache_problem(model.cfg)

    def no_cache(*args, **kwargs):
        raise AssertionError("the KV-cache path ran")

    monkeypatch.setattr(G, "_prefill", no_cache)
    prompt = _prompt(4)
    out = G.generate_tokens(model, params, prompt, max_new_tokens=4, temperature=0.0)
    assert out == G.generate_tokens_reference(model, params, prompt, max_new_tokens=4,
                                              temperature=0.0)


def test_pick_greedy_top_k_and_padded_ids():
    """The sampler alone: padded ids (> 50256) are never produced, top-k keeps the k largest
    (ties included) and the draws follow softmax(logits / temperature)."""
    key = jax.random.PRNGKey(0)
    logits = jnp.zeros(50304).at[50300].set(100.0).at[7].set(5.0).at[11].set(4.0).at[3].set(4.0)
    pick = jax.jit(jax.vmap(G._pick, in_axes=(None, None, 0, None, None)),
                   static_argnums=(4,), compiler_options=FAST_COMPILE)
    steps = jnp.arange(300)
    assert set(np.asarray(pick(logits, key, steps, 0.0, None)).tolist()) == {7}  # greedy
    logits = logits.at[20].set(3.9)
    assert set(np.asarray(pick(logits, key, steps, 2.0, 2)).tolist()) == {3, 7, 11}  # a tie
    assert max(np.asarray(pick(logits, key, steps, 1e3, 0)).tolist()) <= 50256
    probs = jnp.array([0.1, 0.2, 0.3, 0.4])
    draws = np.asarray(pick(jnp.log(probs) * 0.5, key, jnp.arange(4000), 0.5, 0))
    np.testing.assert_allclose(np.bincount(draws, minlength=4) / 4000, probs, atol=0.03)


def test_prompt_buckets():
    assert [G.prompt_bucket(n, 128) for n in (1, 16, 17, 33, 64, 65, 128)] == [
        16, 16, 32, 64, 64, 128, 128]
    assert G.prompt_bucket(3, 8) == 8
