"""The fused head + cross-entropy loss equals the plain one, value and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minillm_jax.losses import cross_entropy, fused_linear_cross_entropy


@pytest.mark.parametrize("n,chunk", [(64, 16), (50, 16)])  # 50: a padded last chunk
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
