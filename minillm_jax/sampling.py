"""Text generation from a trained model (temperature and top-k sampling)."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from minillm_jax.tokenizer import EOT_TOKEN, get_tokenizer


@functools.partial(jax.jit, static_argnames=("model", "top_k"))
def _next_token(model: Any, params: Any, window: jax.Array, pos: jax.Array, rng: jax.Array,
                temperature: jax.Array, top_k: int) -> jax.Array:
    """Samples the token after position `pos` of a fixed-size window (one compile per model)."""
    logits = model.apply({"params": params}, window[None], train=False)[0, pos]
    logits = logits[: min(logits.shape[-1], EOT_TOKEN + 1)]  # padded ids never occur in data
    if top_k:
        kth = jnp.sort(logits)[-top_k]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    greedy = jnp.argmax(logits)
    sampled = jax.random.categorical(rng, logits / jnp.maximum(temperature, 1e-6))
    return jnp.where(temperature > 0, sampled, greedy)


def generate(model: Any, params: Any, prompt: str, *, max_new_tokens: int = 40,
             temperature: float = 0.9, top_k: int = 0, seed: int = 0) -> str:
    """Continues `prompt`; keeps the last sequence_length tokens as context (no KV cache: the
    window is recomputed per token, which is fine for samples on small models)."""
    enc = get_tokenizer()
    tokens = enc.encode_ordinary(prompt) or [EOT_TOKEN]
    window_len = model.cfg.sequence_length
    rng = jax.random.PRNGKey(seed)
    out: list[int] = []
    for i in range(max_new_tokens):
        context = (tokens + out)[-window_len:]
        window = np.zeros(window_len, np.int32)
        window[: len(context)] = context
        token = _next_token(model, params, jnp.asarray(window), jnp.asarray(len(context) - 1),
                            jax.random.fold_in(rng, i), jnp.asarray(temperature, jnp.float32),
                            top_k)
        out.append(int(token))
    return prompt + enc.decode(out)
