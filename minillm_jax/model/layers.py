"""The layers a Transformer block is made of: norms, rotary embeddings, causal self-attention
and the MLP (GPTBase and Llama flavours, docs/llm-baselines.md), each a Flax linen module taking
(cfg, execution, train). The parameter layout they produce is documented in
minillm_jax/model/transformer.py; minillm_jax/model/moe.py holds the mixture-of-experts sublayer.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from minillm_jax.model.attention import attention_for_device, causal_attention, visible
from minillm_jax.config import ExecutionConfig, ModelConfig
from minillm_jax.model.dense import dense_dot_general
from minillm_jax.model.precision import compute_dtype, dense_weight_grad
from minillm_jax.model.token_embedding_options import add_value_embedding

Array = jax.Array


# The activations that remat="save_named" keeps for the backward pass (checkpoint names; the
# policy is minillm_jax.model.transformer.REMAT_POLICIES). Each is the output of a matmul or of
# the residual stream, which the backward pass needs and which costs a matmul (or a whole
# sublayer) to recompute; everything between them (norms, RoPE, activation functions, dropout
# masks, casts) is elementwise and recomputed from them instead of stored.
SAVED_ACTIVATIONS = {
    "qkv": "attn_qkv",  # q, k, v after qk-norm and RoPE: the attention kernel's inputs
    "attention output": "attn_out",  # the input of c_proj
    "mlp input projections": "mlp_in",  # w1 x and w2 x (SwiGLU) or c_fc x, pre-activation
    "residual stream": "residual",  # the stream between a block's sublayers (its input and
    # output are the layer scan's carry, which the scan keeps anyway)
}


def dense_dot(execution: ExecutionConfig) -> Any:
    """nn.Dense's dot_general for `execution`: None (lax.dot_general) or the transposed-input
    weight gradient of minillm_jax/model/dense.py."""
    return dense_dot_general if dense_weight_grad(execution) == "transposed" else None


def normal_init(std: float) -> nn.initializers.Initializer:
    return nn.initializers.normal(stddev=std)


def proj_init(cfg: ModelConfig) -> nn.initializers.Initializer:
    """Residual-branch output projections: N(0, proj_std), or zeros with zero_init_proj (every
    block then starts as the identity)."""
    return nn.initializers.zeros if cfg.zero_init_proj else normal_init(cfg.proj_std)


class LayerNorm(nn.Module):
    """llm-baselines LayerNorm: weight, optional bias, eps 1e-5, computed in float32."""

    eps: float
    use_bias: bool
    dtype: Any

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        x32 = x.astype(jnp.float32)
        mean = x32.mean(-1, keepdims=True)
        var = jnp.square(x32 - mean).mean(-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps) * scale
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        return y.astype(self.dtype)


class RMSNorm(nn.Module):
    """Llama RMSNorm: normalise in float32, cast back to the input dtype, then scale."""

    eps: float

    @nn.compact
    def __call__(self, x: Array) -> Array:
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), jnp.float32)
        x32 = x.astype(jnp.float32)
        y = (x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, -1, keepdims=True) + self.eps)).astype(x.dtype)
        return y * scale.astype(x.dtype)


def rope_tables(seq_len: int, head_dim: int, theta: float) -> tuple[Array, Array]:
    """cos/sin of angle t * theta^(-2j/hs), shape (T, hs/2), float32."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    angles = jnp.arange(seq_len, dtype=jnp.float32)[:, None] * inv_freq[None, :]
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: Array, cos: Array, sin: Array) -> Array:
    """Rotates interleaved pairs (x[2j], x[2j+1]) of x (B, T, nh, hs), in float32
    (docs/llm-baselines.md#llama-architecture-and-initialisation)."""
    b, t, h, d = x.shape
    pairs = x.astype(jnp.float32).reshape(b, t, h, d // 2, 2)
    a, c = pairs[..., 0], pairs[..., 1]
    cos, sin = cos[None, :t, None, :], sin[None, :t, None, :]
    rotated = jnp.stack([a * cos - c * sin, a * sin + c * cos], axis=-1)
    return rotated.reshape(b, t, h, d).astype(x.dtype)


class Attention(nn.Module):
    """Causal self-attention. With `start` (a traced int: decode mode, see the module docstring)
    the T tokens of x sit at positions start .. start+T-1 and attend to the KV cache.
    cfg.attention_window > 0: sliding-window attention (minillm_jax/model/attention.py) where
    `windowed` is true: True (static: every layer) or a traced per-layer bool."""

    cfg: ModelConfig
    execution: ExecutionConfig
    train: bool

    @nn.compact
    def __call__(self, x: Array, start: Array | None = None,
                 windowed: Array | bool = True, value_embed: Array | None = None) -> Array:
        """`windowed`: whether this layer's attention is windowed (cfg.attention_window; a traced
        per-layer flag when layers differ). `value_embed` (B, T, C): the layer's value
        embedding, added to v through its gate (minillm_jax/model/token_embedding_options.py)."""
        cfg, dtype = self.cfg, compute_dtype(self.execution)
        b, t, c = x.shape
        dense = lambda feats, init, name: nn.Dense(  # noqa: E731
            feats, use_bias=cfg.bias, dtype=dtype, param_dtype=jnp.float32, kernel_init=init,
            dot_general=dense_dot(self.execution), name=name)
        qkv = dense(3 * c, normal_init(cfg.init_std), "c_attn")(x)
        q, k, v = (y.reshape(b, t, cfg.n_head, cfg.head_dim) for y in jnp.split(qkv, 3, axis=-1))
        if cfg.qk_norm:  # per head, over the head dim (OLMo 2, modded-nanogpt)
            q = RMSNorm(cfg.rmsnorm_eps, name="q_norm")(q)
            k = RMSNorm(cfg.rmsnorm_eps, name="k_norm")(k)
        if cfg.model == "llama":
            cos, sin = rope_tables(cfg.sequence_length, cfg.head_dim, cfg.rope_theta)
            if start is not None:  # the rows of positions start .. start+t-1
                positions = start + jnp.arange(t)
                cos, sin = cos[positions], sin[positions]
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if value_embed is not None:
            v = add_value_embedding(self, cfg, dtype, x, v, value_embed)
        if start is not None:
            y = self._cached_attention(q, k, v, start, windowed)
            return dense(c, proj_init(cfg), "c_proj")(y.reshape(b, t, c))
        q, k, v = checkpoint_name((q, k, v), SAVED_ACTIVATIONS["qkv"])
        rate = cfg.attention_dropout
        use_dropout = self.train and rate > 0
        impl = self.execution.attention_impl
        if impl == "auto":  # a model built outside build_run, which resolves it once
            impl = attention_for_device(impl, dtype.name, cfg.head_dim, rate).impl
        window = cfg.attention_window if windowed is not False else 0
        y = causal_attention(
            q, k, v, dropout_rate=rate,
            dropout_rng=self.make_rng("dropout") if use_dropout else None, implementation=impl,
            window=window, windowed=None if windowed is True else windowed)
        # named as the kernel returns it: reshaped first, it would be a second copy of the cuDNN
        # output that the remat policy saves anyway
        if impl != "cudnn":
            y = checkpoint_name(y, SAVED_ACTIVATIONS["attention output"])
        y = y.reshape(b, t, c)
        y = dense(c, proj_init(cfg), "c_proj")(y)
        return nn.Dropout(cfg.dropout, deterministic=not self.train)(y)

    def _cached_attention(self, q: Array, k: Array, v: Array, start: Array,
                          windowed: Array | bool) -> Array:
        """Writes k, v (B, T, nh, hs) into cache rows start .. start+T-1, then attends from the
        queries of positions start+i to the cache rows <= start+i, and > start+i-window with a
        sliding window (XLA kernel: any device)."""
        b, t, h, d = k.shape
        shape = (b, self.cfg.sequence_length, h, d)
        cached_k = self.variable("cache", "key", jnp.zeros, shape, k.dtype)
        cached_v = self.variable("cache", "value", jnp.zeros, shape, v.dtype)
        zero = jnp.zeros((), jnp.int32)
        index = (zero, jnp.asarray(start, jnp.int32), zero, zero)
        cached_k.value = jax.lax.dynamic_update_slice(cached_k.value, k, index)
        cached_v.value = jax.lax.dynamic_update_slice(cached_v.value, v, index)
        window = self.cfg.attention_window if windowed is not False else 0
        if window > 0 and windowed is not True:  # traced per-layer flag; L keys = full causal
            window = jnp.where(windowed, window, shape[1])
        mask = visible(start + jnp.arange(t), shape[1], window)  # (T, L)
        return jax.nn.dot_product_attention(q, cached_k.value, cached_v.value,
                                            mask=mask[None, None], implementation="xla")


class MLP(nn.Module):
    """swiglu (Llama): c_proj(silu(w1 x) * w2 x); gelu (GPT): c_proj(gelu(c_fc x)), exact GELU;
    relu2: c_proj(relu(c_fc x)^2) (Primer). GPT models add dropout on the output; llm-baselines'
    Llama has none and no MLP biases."""

    cfg: ModelConfig
    execution: ExecutionConfig
    train: bool

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg, dtype = self.cfg, compute_dtype(self.execution)
        bias = cfg.bias and cfg.model == "gpt"
        dense = lambda feats, init, name: nn.Dense(  # noqa: E731
            feats, use_bias=bias, dtype=dtype, param_dtype=jnp.float32, kernel_init=init,
            dot_general=dense_dot(self.execution), name=name)
        hidden, init = cfg.mlp_hidden, normal_init(cfg.init_std)
        mlp_in = SAVED_ACTIVATIONS["mlp input projections"]
        if cfg.mlp_activation == "swiglu":
            gate = checkpoint_name(dense(hidden, init, "w1")(x), mlp_in)
            h = nn.silu(gate) * checkpoint_name(dense(hidden, init, "w2")(x), mlp_in)
        else:
            h = checkpoint_name(dense(hidden, init, "c_fc")(x), mlp_in)
            h = (nn.gelu(h, approximate=False) if cfg.mlp_activation == "gelu"
                 else jnp.square(nn.relu(h)))
        y = dense(cfg.n_embd, proj_init(cfg), "c_proj")(h)
        if cfg.model == "llama":
            return y
        return nn.Dropout(cfg.dropout, deterministic=not self.train)(y)


def make_norm(cfg: ModelConfig, execution: ExecutionConfig, name: str) -> nn.Module:
    if cfg.model == "llama":
        return RMSNorm(cfg.rmsnorm_eps, name=name)
    return LayerNorm(cfg.layernorm_eps, cfg.bias, compute_dtype(execution), name=name)
