"""Log-likelihoods of continuations under the JAX model: what an lm-eval-harness
`loglikelihood` request computes, here with our model and tokenizer.

For a (context, continuation) pair: sum over the continuation's tokens of log p(token | all
tokens before it), and whether every one of them is the argmax (lm-eval's `is_greedy`).
Tokenisation follows lm-eval-harness's HFLM so that the numbers are comparable: trailing
spaces of the context move to the continuation, the continuation's tokens are those of
encode(context + continuation) past encode(context) (so a merge across the boundary counts in
the continuation), an empty context is <|endoftext|>, and the input keeps the last
sequence_length tokens. Multiple-choice accuracy picks the choice with the largest sum.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from minillm_jax.data.tokenizer import EOT_TOKEN, get_tokenizer


def encode_pair(context: str, continuation: str, enc: Any = None) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) as lm-eval-harness's HFLM splits them."""
    enc = enc if enc is not None else get_tokenizer()
    if not context:
        return [EOT_TOKEN], enc.encode_ordinary(continuation)
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = enc.encode_ordinary(context + continuation)
    context_ids = enc.encode_ordinary(context)
    return context_ids, whole[len(context_ids):]


@functools.partial(jax.jit, static_argnames=("model",))
def _token_logprobs(model: Any, params: Any, window: jax.Array) -> tuple[jax.Array, jax.Array]:
    """log p(window[t+1] | window[:t+1]) and whether window[t+1] is the argmax, for every t of a
    (sequence_length + 1,) window (padding after the real tokens never reaches them: causal)."""
    logits = model.apply({"params": params}, window[None, :-1], False)[0]
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    targets = window[1:]
    return (jnp.take_along_axis(logp, targets[:, None], axis=-1)[:, 0],
            jnp.argmax(logits, axis=-1) == targets)


def continuation_logprobs(model: Any, params: Any, pairs: Sequence[tuple[str, str]],
                          enc: Any = None) -> list[tuple[float, bool]]:
    """(sum log p(continuation | context), is_greedy) per (context, continuation) pair, in
    float32 with the model's own forward pass (model: minillm_jax.model.transformer.Transformer)."""
    seq_len = model.cfg.sequence_length
    out = []
    for context, continuation in pairs:
        context_ids, continuation_ids = encode_pair(context, continuation, enc)
        if not continuation_ids:
            raise ValueError(f"empty continuation after tokenisation: {continuation!r}")
        ids = (context_ids + continuation_ids)[-(seq_len + 1):]
        window = np.zeros(seq_len + 1, np.int32)
        window[: len(ids)] = ids
        logp, greedy = jax.device_get(_token_logprobs(model, params, jnp.asarray(window)))
        n, end = len(continuation_ids), len(ids) - 1  # positions end-n .. end-1 predict them
        out.append((float(np.sum(logp[end - n:end], dtype=np.float64)),
                    bool(np.all(greedy[end - n:end]))))
    return out
