"""Text generation from a trained model: temperature and top-k sampling, with a KV cache.

Semantics (every path): the context of each new token is the last `sequence_length` tokens of
prompt + generated text (an empty prompt is <|endoftext|>); temperature 0 is greedy decoding;
top_k 0 samples from the whole vocabulary; ids above <|endoftext|> (50256: the padding of the
vocabulary to a multiple of 64, never seen in data) are never produced; the logits are the
model's, logit_softcap included; new token i is drawn with key fold_in(PRNGKey(seed), i), so the
same seed gives the same text, and the same text on both paths (up to float rounding).

KV-cache path (`generate`, `generate_tokens`; the cache: Transformer.decode, minillm_jax/model/transformer.py):
  prefill   the context, padded with zeros to a length bucket (the next power of two, at least
            16, at most sequence_length), runs once at positions 0..; the logits of its last real
            token give new token 0. Padding sits after the real tokens, so causal attention never
            lets them see it, and its cache rows are overwritten before any query can reach them.
  decode    every next token runs alone at its position, attending to the cached keys/values,
            while the context still fits: a lax.fori_loop over a jitted single-token step, the
            generated tokens gathered on the device (one host transfer at the end).
  window    once the context would exceed sequence_length, the next token must see exactly the
            last sequence_length tokens at positions 0 .. sequence_length-1 (as in training).
            Dropping the oldest token moves every position and changes every hidden state, so no
            cached key stays valid: from then on each token recomputes that window (one full
            forward, the output layer on its last position only). Exact, at the cost of the
            no-cache path, and only past sequence_length tokens; the window is shifted on the
            device.
Compiled programs per model: one prefill per prompt bucket (at most log2(sequence_length)), one
decode loop, one window step, all reused across calls.

Fallback: a model with capacity-limited MoE routing (moe_impl einsum, moe_capacity_factor > 0)
uses the no-cache path (`generate_reference`): whether a token's expert choice is dropped depends
on the other tokens of its routing group (the whole window), which a one-token decode step cannot
see. Dropless MoE and weighted_residual act on each token on its own and use the cache.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from minillm_jax.model.transformer import Transformer, head_logits
from minillm_jax.data.tokenizer import EOT_TOKEN, get_tokenizer

MIN_BUCKET = 16

__all__ = ["generate", "generate_reference", "generate_tokens", "generate_tokens_reference",
           "kv_cache_problem", "prompt_bucket"]


def kv_cache_problem(cfg: Any) -> str | None:
    """Why the KV-cache path cannot reproduce the model's full forward pass, or None."""
    if cfg.has_moe and cfg.moe_impl_resolved != "dropless":
        return ("capacity-limited MoE routing (moe_impl einsum) drops tokens depending on the "
                "other tokens of their routing group, which a one-token decode step cannot see")
    return None


def prompt_bucket(length: int, sequence_length: int) -> int:
    """The padded prefill length of a context of `length` tokens."""
    bucket = max(MIN_BUCKET, 1 << max(0, length - 1).bit_length())
    return min(bucket, sequence_length)


def _order_keys(x: jax.Array) -> jax.Array:
    """uint32 keys of float32 values, in the same order as the values."""
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
    return jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(0x80000000))


def _top_k_mask(logits: jax.Array, k: int) -> jax.Array:
    """logits >= the k-th largest logit (ties kept), found by bisection on the order keys: 32
    counting passes, exact, and on CPU ten times faster than sorting 50k logits."""
    keys = _order_keys(logits)

    def halve(_, bounds):  # invariant: count(keys >= lo) >= k, the k-th largest is <= hi
        lo, hi = bounds
        gap = hi - lo
        mid = lo + (gap >> 1) + (gap & 1)
        ok = jnp.sum(keys >= mid) >= k
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid - 1)

    lo, _ = jax.lax.fori_loop(0, 32, halve, (keys.min(), keys.max()))
    return keys >= lo


def _pick(logits: jax.Array, key: jax.Array, step: jax.Array, temperature: jax.Array,
          top_k: int | None) -> jax.Array:
    """New token `step` from float32 logits (V,). top_k None: greedy (the argmax; static, so
    that greedy programs hold no sampler). Else a sample of softmax(logits / temperature) over
    the top_k largest logits (0: all), drawn by inverting the cumulative distribution at one
    uniform number (key fold_in(key, step)): cheaper on CPU than Gumbel noise for 50k ids."""
    logits = logits[: min(logits.shape[-1], EOT_TOKEN + 1)]  # padded ids never occur in data
    greedy = jnp.argmax(logits).astype(jnp.int32)
    if top_k is None:
        return greedy
    scaled = logits / temperature
    weights = jnp.exp(scaled - jnp.max(scaled))
    if 0 < top_k < logits.shape[-1]:
        weights = jnp.where(_top_k_mask(logits, top_k), weights, 0.0)
    cdf = jnp.cumsum(weights)
    u = jax.random.uniform(jax.random.fold_in(key, step)) * cdf[-1]
    index = jnp.sum(cdf <= u).astype(jnp.int32)  # the first id whose cdf exceeds u
    return jnp.where(index < logits.shape[-1], index, greedy)  # (u rounded up to cdf[-1])


def _static_top_k(temperature: float, top_k: int) -> int | None:
    """_pick's static top_k: None for greedy decoding."""
    return None if temperature <= 0 else top_k


def _logits_at(model: Any, features: Any, pos: jax.Array) -> jax.Array:
    """Float32 logits (V,) of position `pos` of batch row 0 (softcap as in training)."""
    hidden = jax.lax.dynamic_slice_in_dim(features.hidden[:1], pos, 1, axis=1)
    return head_logits(hidden, features.head, model.cfg.logit_softcap)[0, 0]


# ------------------------------------------------------------------------------------------------
# KV-cache path


@functools.partial(jax.jit, static_argnames=("model", "top_k"))
def _prefill(model: Any, params: Any, padded: jax.Array, length: jax.Array, key: jax.Array,
             temperature: jax.Array, top_k: int | None) -> tuple[jax.Array, Any]:
    """(new token 0, cache) from the context padded to its bucket, (1, P)."""
    features, variables = model.apply({"params": params}, padded, 0, method=Transformer.decode,
                                      mutable=["cache"])
    token = _pick(_logits_at(model, features, length - 1), key, 0, temperature, top_k)
    return token, variables["cache"]


def _decode_one(model: Any, params: Any, cache: Any, token: jax.Array, pos: jax.Array,
                key: jax.Array, step: jax.Array, temperature: jax.Array, top_k: int | None,
                ) -> tuple[jax.Array, Any]:
    """Feeds `token` at position `pos`; returns (new token `step`, updated cache)."""
    features, variables = model.apply({"params": params, "cache": cache}, token.reshape(1, 1),
                                      pos, method=Transformer.decode, mutable=["cache"])
    return _pick(_logits_at(model, features, 0), key, step, temperature, top_k), variables["cache"]


@functools.partial(jax.jit, static_argnames=("model", "top_k"))
def _decode_loop(model: Any, params: Any, cache: Any, token: jax.Array, start: jax.Array,
                 n_steps: jax.Array, key: jax.Array, temperature: jax.Array, top_k: int | None,
                 ) -> jax.Array:
    """New tokens 1 .. n_steps (in a (sequence_length,) buffer): token feeds position `start`,
    each new token the next position."""
    def body(i, carry):
        cache, token, out = carry
        token, cache = _decode_one(model, params, cache, token, start + i, key, i + 1,
                                   temperature, top_k)
        return cache, token, out.at[i].set(token)

    out = jnp.zeros((model.cfg.sequence_length,), jnp.int32)
    return jax.lax.fori_loop(0, n_steps, body, (cache, token, out))[2]


@functools.partial(jax.jit, static_argnames=("model", "top_k"), donate_argnames=("window",))
def _window_step(model: Any, params: Any, window: jax.Array, token: jax.Array, key: jax.Array,
                 step: jax.Array, temperature: jax.Array, top_k: int | None,
                 ) -> tuple[jax.Array, jax.Array]:
    """Slides the full (sequence_length,) window by `token` and recomputes it: (new token
    `step`, the new window)."""
    window = jnp.concatenate([window[1:], token.reshape(1)])
    features = model.apply({"params": params}, window[None], False, method=Transformer.features)
    return _pick(_logits_at(model, features, window.shape[0] - 1), key, step, temperature,
                 top_k), window


def generate_tokens(model: Any, params: Any, tokens: list[int], *, max_new_tokens: int = 40,
                    temperature: float = 0.9, top_k: int = 0, seed: int = 0) -> list[int]:
    """`max_new_tokens` token ids continuing `tokens` (non-empty), with the KV cache (module
    docstring), or the no-cache path where `kv_cache_problem` says so."""
    if kv_cache_problem(model.cfg) is not None:
        return generate_tokens_reference(model, params, tokens, max_new_tokens=max_new_tokens,
                                         temperature=temperature, top_k=top_k, seed=seed)
    if not tokens:
        raise ValueError("generate_tokens needs at least one prompt token")
    if max_new_tokens <= 0:
        return []
    seq_len = model.cfg.sequence_length
    key = jax.random.PRNGKey(seed)
    temp = jnp.asarray(temperature, jnp.float32)
    top_k = _static_top_k(temperature, top_k)
    context = list(tokens[-seq_len:])
    padded = np.zeros((1, prompt_bucket(len(context), seq_len)), np.int32)
    padded[0, : len(context)] = context
    token, cache = _prefill(model, params, padded, np.int32(len(context)), key, temp, top_k)
    # New token i (i >= 1) sees tokens + out[:i], which fits while len(tokens) + i <= seq_len.
    n_decode = max(0, min(max_new_tokens - 1, seq_len - len(tokens)))
    out = [int(token)]
    if n_decode:
        buf = _decode_loop(model, params, cache, token, np.int32(len(tokens)),
                           np.int32(n_decode), key, temp, top_k)
        out += np.asarray(buf)[:n_decode].tolist()
    del cache
    if len(out) < max_new_tokens:
        # New token i sees (tokens + out[:i])[-seq_len:], the window of token i-1 shifted by
        # out[i-1]; that window of token i-1, (tokens + out[:i-1])[-seq_len:], is full here.
        window = jnp.asarray(np.asarray((list(tokens) + out[:-1])[-seq_len:], np.int32))
        token = jnp.asarray(out[-1], jnp.int32)
        new = []
        for i in range(len(out), max_new_tokens):
            token, window = _window_step(model, params, window, token, key, np.int32(i), temp,
                                         top_k)
            new.append(token)
        out += [int(t) for t in jax.device_get(new)]
    return out


def generate(model: Any, params: Any, prompt: str, **sampling: Any) -> str:
    """Continues `prompt` (module docstring: semantics, the KV cache and its fallback).
    `sampling`: max_new_tokens (40), temperature (0.9), top_k (0 = all), seed (0)."""
    return _continue_text(generate_tokens, model, params, prompt, sampling)


def _continue_text(generate_fn: Any, model: Any, params: Any, prompt: str,
                   sampling: dict[str, Any]) -> str:
    """prompt + the decoded tokens `generate_fn` continues it with (an empty prompt starts
    from the end-of-text token)."""
    enc = get_tokenizer()
    tokens = enc.encode_ordinary(prompt) or [EOT_TOKEN]
    return prompt + enc.decode(generate_fn(model, params, tokens, **sampling))


# ------------------------------------------------------------------------------------------------
# No-cache path: the reference, and the fallback


@functools.partial(jax.jit, static_argnames=("model", "top_k"))
def _next_token(model: Any, params: Any, window: jax.Array, pos: jax.Array, key: jax.Array,
                step: jax.Array, temperature: jax.Array, top_k: int | None) -> jax.Array:
    """New token `step` after position `pos` of a fixed-size, zero-padded window (one compile
    per model): a full forward pass, the output layer on that position only."""
    features = model.apply({"params": params}, window[None], False, method=Transformer.features)
    return _pick(_logits_at(model, features, pos), key, step, temperature, top_k)


def generate_tokens_reference(model: Any, params: Any, tokens: list[int], *,
                              max_new_tokens: int = 40, temperature: float = 0.9, top_k: int = 0,
                              seed: int = 0) -> list[int]:
    """generate_tokens without a cache: every new token recomputes its whole context."""
    if not tokens:
        raise ValueError("generate_tokens_reference needs at least one prompt token")
    seq_len = model.cfg.sequence_length
    key = jax.random.PRNGKey(seed)
    temp = jnp.asarray(temperature, jnp.float32)
    top_k = _static_top_k(temperature, top_k)
    out: list[int] = []
    for i in range(max_new_tokens):
        context = (list(tokens) + out)[-seq_len:]
        window = np.zeros(seq_len, np.int32)
        window[: len(context)] = context
        out.append(int(_next_token(model, params, window, np.int32(len(context) - 1), key,
                                   np.int32(i), temp, top_k)))
    return out


def generate_reference(model: Any, params: Any, prompt: str, **sampling: Any) -> str:
    """`generate` on the no-cache path (the same text, up to float rounding; slower)."""
    return _continue_text(generate_tokens_reference, model, params, prompt, sampling)
