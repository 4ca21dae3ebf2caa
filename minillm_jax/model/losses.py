"""Cross entropy of the output layer, plain or fused with the head matmul.

With a 50k vocabulary the (tokens x vocab) logits dominate training memory (66 x 512 x 50304
float32 = 6.8 GB for best.py) and, on CPUs, their element-wise passes dominate time. The fused
form walks over chunks of tokens: for each chunk it forms the logits, the loss and, because the
loss is the last operation, the gradient softmax(z) - onehot(y) right away, and multiplies it into
the hidden-state and head-matrix gradients. The full logits never exist and nothing is recomputed
(the Liger-kernel "fused linear cross entropy" idea, in plain JAX with a custom VJP; optax has no
such loss).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

Array = jax.Array


def cross_entropy(logits: Array, targets: Array) -> Array:
    """Per-token cross entropy in float32 (llm-baselines: mean over all B*T tokens)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)


def chunk_size(n_tokens: int, requested: int) -> int:
    """Rows per chunk of the chunked output layer for `n_tokens` rows and loss_chunk_size
    `requested` (0: all at once).

    The largest divisor of n_tokens not above `requested`, so that no chunk holds padding rows
    (33,792 tokens with 4,096 requested: 11 chunks of 3,072, not 9 of 4,096 with 3,072 padding
    rows, 9% more output-layer work). A token count with no divisor of at least half the
    request (e.g. a prime) takes the fewest chunks of equal size instead, which pads fewer rows
    than there are chunks."""
    if requested <= 0 or n_tokens <= requested:
        return n_tokens
    divisor = max(d for d in range(1, requested + 1) if n_tokens % d == 0)
    if 2 * divisor >= requested:
        return divisor
    n_chunks = -(-n_tokens // requested)
    return -(-n_tokens // n_chunks)


def _softcap(logits: Array, cap: float) -> tuple[Array, Array | None]:
    """(cap * tanh(logits / cap), tanh(logits / cap)) for cap > 0; (logits, None) otherwise."""
    if cap <= 0:
        return logits, None
    tanh = jnp.tanh(logits / cap)
    return cap * tanh, tanh


def _fused_forward(hidden: Array, head: Array, targets: Array, chunk: int, softcap: float = 0.0,
                   ) -> tuple[Array, tuple[Array, Array]]:
    """Mean loss and its gradients with respect to hidden (N, C) and head (V, C)."""
    n, c = hidden.shape
    chunk = chunk_size(n, chunk)
    pad = (-n) % chunk
    valid = jnp.pad(jnp.ones((n,), jnp.float32), (0, pad)).reshape(-1, chunk)
    h = jnp.pad(hidden, ((0, pad), (0, 0))).reshape(-1, chunk, c)
    y = jnp.pad(targets, (0, pad)).reshape(-1, chunk)
    head_c = head.astype(hidden.dtype)

    def body(grad_head_t, inputs):
        h_i, y_i, valid_i = inputs
        logits, tanh = _softcap(jnp.dot(h_i, head_c.T, preferred_element_type=jnp.float32),
                                softcap)
        # One exp per logit, kept for the gradient: softmax = exp(z - max) / sum. Recomputing
        # exp(z - lse) for the gradient instead (as a logsumexp would) costs a second pass of
        # the most expensive element-wise op over (chunk x vocab): measured 25-30% of this
        # function's time on CPU.
        row_max = jnp.max(logits, axis=-1)
        exp_shifted = jnp.exp(logits - row_max[:, None])
        sum_exp = jnp.sum(exp_shifted, axis=-1)
        lse = jnp.log(sum_exp) + row_max
        target_logit = jnp.take_along_axis(logits, y_i[:, None], axis=-1)[:, 0]
        loss = jnp.sum((lse - target_logit) * valid_i)
        probs = exp_shifted * (1.0 / sum_exp)[:, None]
        grad_logits = (probs - jax.nn.one_hot(y_i, head.shape[0], dtype=jnp.float32))
        if tanh is not None:  # d(cap tanh(z / cap))/dz = 1 - tanh^2
            grad_logits = grad_logits * (1.0 - jnp.square(tanh))
        grad_logits = (grad_logits * (valid_i / n)[:, None]).astype(hidden.dtype)
        grad_h = jnp.dot(grad_logits, head_c, preferred_element_type=jnp.float32)
        # The head's gradient as (C, V) = h^T @ g: a dot whose operands XLA:CPU's fast
        # (YNNPACK) kernels take as they are. Written as g^T @ h, or with the transposes left
        # for XLA to fold, it contracts g's first dimension and falls back to a slower kernel
        # (measured: 100 vs 145 GFLOP/s on the output layer's shapes). The barrier keeps XLA
        # from folding the small (C, chunk) transpose back into the dot.
        h_t = jax.lax.optimization_barrier(h_i.T)
        grad_head_t = grad_head_t + jnp.dot(h_t, grad_logits, preferred_element_type=jnp.float32)
        return grad_head_t, (loss, grad_h.astype(hidden.dtype))

    grad_head_t, (losses, grad_h) = jax.lax.scan(
        body, jnp.zeros(head.shape[::-1], jnp.float32), (h, y, valid))
    grad_h = grad_h.reshape(-1, c)[:n]
    grad_head = jax.lax.optimization_barrier(grad_head_t).T  # (V, C), not refolded either
    return jnp.sum(losses) / n, (grad_h, grad_head.astype(head.dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def fused_linear_cross_entropy(hidden: Array, head: Array, targets: Array, chunk: int,
                               softcap: float = 0.0) -> Array:
    """mean_i CE(softcap(hidden_i @ head.T), targets_i) for hidden (N, C), head (V, C),
    targets (N,); softcap 0 = plain logits."""
    return _fused_forward(hidden, head, targets, chunk, softcap)[0]


def _fwd(hidden, head, targets, chunk, softcap):
    loss, grads = _fused_forward(hidden, head, targets, chunk, softcap)
    return loss, grads


def _bwd(chunk, softcap, grads, cotangent):
    grad_h, grad_head = grads
    return grad_h * cotangent.astype(grad_h.dtype), grad_head * cotangent, None


fused_linear_cross_entropy.defvjp(_fwd, _bwd)


def hits_with_ties(exp_shifted: Array, target_logit: Array, row_max: Array) -> Array:
    """1 where the target's logit is the row's only largest logit, else 0: a tie for the largest
    counts as a miss (a prediction that names no single token), so a uniform model, every logit
    equal, scores 0 rather than the 100% of a plain "target == max" test. exp_shifted =
    exp(logits - row_max), which the log-sum-exp computes anyway: the maxima are its entries
    equal to 1 (a logit within float32 rounding of the max counts as tied), so the count shares
    that pass (a separate `logits == max` pass measured 1.6x slower with 3x the memory on CPU)."""
    maxima = jnp.sum((exp_shifted == 1.0).astype(jnp.float32), axis=-1)
    return ((target_logit >= row_max) & (maxima == 1.0)).astype(jnp.float32)


def token_losses_and_hits(hidden: Array, head: Array, targets: Array, chunk: int,
                          softcap: float = 0.0) -> tuple[Array, Array]:
    """Per-token cross entropy and argmax hits (N,) for hidden (N, C), head (V, C), targets (N,),
    forward only, over chunks of `chunk` tokens (0: all at once), so that evaluation holds at most
    (chunk x vocab) float32 logits. A hit is the target's logit being the largest of all V, as
    llm-baselines' argmax accuracy; a tie for the largest logit is a miss (hits_with_ties)."""
    n, c = hidden.shape
    chunk = chunk_size(n, chunk)
    pad = (-n) % chunk
    h = jnp.pad(hidden, ((0, pad), (0, 0))).reshape(-1, chunk, c)
    y = jnp.pad(targets, (0, pad)).reshape(-1, chunk)
    head_c = head.astype(hidden.dtype)

    def one_chunk(inputs):
        h_i, y_i = inputs
        logits, _ = _softcap(jnp.dot(h_i, head_c.T, preferred_element_type=jnp.float32),
                             softcap)
        # One max pass serves both the log-sum-exp and the hit test: on CPU the passes over the
        # (chunk x vocab) logits, not the matmul, bound evaluation, and argmax's (value, index)
        # reduction costs as much as the exp-sum (measured: 5.5k vs 4.5k tokens/s on the demo's
        # output layer). A tie for the largest logit is a miss (hits_with_ties).
        row_max = jnp.max(logits, axis=-1)
        target = jnp.take_along_axis(logits, y_i[:, None], axis=-1)[:, 0]
        exp_shifted = jnp.exp(logits - row_max[:, None])
        log_sum_exp = jnp.log(jnp.sum(exp_shifted, axis=-1)) + row_max
        return log_sum_exp - target, hits_with_ties(exp_shifted, target, row_max)

    losses, hits = jax.lax.map(one_chunk, (h, y))
    return losses.reshape(-1)[:n], hits.reshape(-1)[:n]
