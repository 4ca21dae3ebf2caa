"""The fused head + cross-entropy loss equals the plain one, value and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minillm_jax.model.losses import cross_entropy, fused_linear_cross_entropy


# 50 with 16: 5 chunks of 10; 528 (66 x 8, as best.py's 66 x 512) with 64: 11 chunks of 48;
# 53 (a prime) with 16: 4 chunks of 14, the last padded
@pytest.mark.parametrize("n,chunk", [(64, 16), (50, 16), (528, 64), (53, 16)])
def test_fused_matches_plain_float32(n, chunk):
    h = jax.random.normal(jax.random.key(0), (n, 32))
    w = jax.random.normal(jax.random.key(1), (300, 32)) * 0.3
    y = jax.random.randint(jax.random.key(2), (n,), 0, 300)
    plain = lambda h, w: cross_entropy(h @ w.T, y).mean() * 2.0  # noqa: E731
    fused = lambda h, w: fused_linear_cross_entropy(h, w, y, chunk) * 2.0  # noqa: E731
    (v1, g1) = jax.jit(jax.value_and_grad(plain, argnums=(0, 1)))(h, w)
    (v2, g2) = jax.jit(jax.value_and_grad(fused, argnums=(0, 1)))(h, w)
    assert float(v2) == pytest.approx(float(v1), rel=1e-6)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("n,requested,expected", [
    (66 * 512, 4096, 3072),  # best.py: 11 chunks of 3,072 (not 9 of 4,096 with 3,072 padding rows)
    (32 * 512, 4096, 4096),  # divisible: the request
    (8 * 128, 128, 128),     # configs/demo.py
    (100, 4096, 100),        # fewer tokens than a chunk: one chunk
    (100, 0, 100),           # 0: all at once
    (1536, 1000, 768),       # the largest divisor up to the request
    (8191, 4096, 4096),      # a prime: no useful divisor, 2 chunks (1 padding row)
    (2 * 4099, 4096, 2733),  # only the divisor 2 below 4096: 3 equal chunks, not 4099 of 2
])
def test_chunk_size_divides_the_tokens_when_it_can(n, requested, expected):
    from minillm_jax.model.losses import chunk_size

    chunk = chunk_size(n, requested)
    assert chunk == expected
    n_chunks = -(-n // chunk)
    if n % chunk:  # padding only without a divisor of at least half the request, and then
        assert n_chunks == -(-n // requested)  # the fewest chunks, each padded at most one row
        assert n_chunks * chunk - n < n_chunks
        assert not any(n % d == 0 for d in range(max(requested // 2, 1), requested + 1))
    else:  # no padding, and no chunk larger than requested (one chunk if that holds all)
        assert chunk <= requested or chunk == n


def test_fused_bf16_close_to_float32():
    """bf16 hidden states: loss within 1e-2 relative, gradients within 2e-2 of their scale."""
    h = jax.random.normal(jax.random.key(0), (64, 32))
    w = jax.random.normal(jax.random.key(1), (300, 32)) * 0.3
    y = jax.random.randint(jax.random.key(2), (64,), 0, 300)
    f = jax.jit(jax.value_and_grad(lambda h, w: fused_linear_cross_entropy(h, w, y, 16),
                                   argnums=(0, 1)))
    v32, (gh32, gw32) = f(h, w)
    v16, (gh16, gw16) = f(h.astype(jnp.bfloat16), w)
    assert float(v16) == pytest.approx(float(v32), rel=1e-2)
    assert gh16.dtype == jnp.bfloat16 and gw16.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(gw16 - gw32))) < 2e-2 * float(jnp.max(jnp.abs(gw32)))


@pytest.mark.parametrize("n,chunk", [(64, 16), (50, 16), (53, 16), (50, 0)])
def test_chunked_eval_losses_and_hits_match_plain(n, chunk):
    """Forward-only per-token loss and argmax hits over chunks == the plain logits' (padded last
    chunk and no chunking included)."""
    from minillm_jax.model.losses import token_losses_and_hits

    h = jax.random.normal(jax.random.key(0), (n, 32))
    w = jax.random.normal(jax.random.key(1), (300, 32)) * 0.3
    y = jax.random.randint(jax.random.key(2), (n,), 0, 300)
    y = y.at[:5].set(jnp.argmax(h[:5] @ w.T, axis=-1))  # some hits for sure
    logits = h @ w.T
    loss, hits = jax.jit(token_losses_and_hits, static_argnums=3)(h, w, y, chunk)
    np.testing.assert_allclose(loss, cross_entropy(logits, y), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(hits, (jnp.argmax(logits, -1) == y).astype(jnp.float32))
    assert float(hits.sum()) >= 5


def test_chunked_eval_step_equals_plain_eval_step():
    """The model's eval step (loss, accuracy, token sums with a padding mask) is the same with
    and without the chunked output layer."""
    from minillm_jax.model import transformer as M
    from minillm_jax.train.step import make_eval_step

    cfg = M.ModelConfig(model="llama", n_layer=2, n_embd=32, n_head=4, vocab_size=128,
                        sequence_length=16)
    model = M.Transformer(cfg)
    params = M.init_params(model, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(5), (4, 17), 0, 128)
    mask = jnp.ones((4, 16)).at[3, 5:].set(0.0)
    batch = {"x": tokens[:, :-1], "y": tokens[:, 1:], "mask": mask}
    plain = jax.jit(make_eval_step(model, 0))(params, batch)
    chunked = jax.jit(make_eval_step(model, 24))(params, batch)  # 64 tokens: padded chunks
    assert float(chunked["loss_sum"]) == pytest.approx(float(plain["loss_sum"]), rel=1e-6)
    assert float(chunked["correct_sum"]) == float(plain["correct_sum"])
    assert float(chunked["tokens"]) == float(plain["tokens"]) == 64 - 11


def test_fused_loss_with_softcap_matches_plain():
    """The fused loss applies the cap and its derivative (1 - tanh^2) inside the chunks."""
    h = jax.random.normal(jax.random.key(0), (50, 32)) * 3.0
    w = jax.random.normal(jax.random.key(1), (300, 32))
    y = jax.random.randint(jax.random.key(2), (50,), 0, 300)
    cap = 5.0
    plain = lambda h, w: cross_entropy(cap * jnp.tanh((h @ w.T) / cap), y).mean()  # noqa: E731
    fused = lambda h, w: fused_linear_cross_entropy(h, w, y, 16, cap)  # noqa: E731
    (v1, g1) = jax.jit(jax.value_and_grad(plain, argnums=(0, 1)))(h, w)
    (v2, g2) = jax.jit(jax.value_and_grad(fused, argnums=(0, 1)))(h, w)
    assert float(v2) == pytest.approx(float(v1), rel=1e-6)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
