"""Two token-embedding options of the modded-nanogpt speedrun (KellerJordan/modded-nanogpt,
train_gpt.py), both off by default (config.value_embeddings = 0, config.smear = False).

Value embeddings (config.value_embeddings = K; the "value embeddings" of the Oct/Nov 2024
records by @Grad62304977 / @KoszarskyB, with the per-head sigmoid gates of the 2025 records):
K extra token-embedding tables, params["value_embeds"]["embedding"] (K, V, C), float32,
initialised N(0, VE_INIT_STD) (modded-nanogpt: 0.01). Table j feeds layer j and layer
n_layer - K + j (the U-net-symmetric first-K / last-K pattern of the records with 3 tables in 12
layers); 2K <= n_layer, so no layer takes two tables. In a layer with a table, the attention
values become, per head h,
    v_h = v_h + g_h * ve_h,   g = 2 * sigmoid(concat(x[..., :G], ve[..., :G]) @ ve_gate)
where x is the attention's (normed) input, ve = table[token] split into heads like v, G =
VE_GATE_CHANNELS = 6 (gate input 2G = 12 channels: modded-nanogpt's "g(x[:6] + ve[:6])"
pattern), and ve_gate (2G, n_head) starts at zero, so every gate starts at 1 (the ungated
v + ve of the first records). The gates live in the stacked blocks, blocks/attn/ve_gate
(n_layer, 2G, n_head), present in every layer (scan-invariant layout) and multiplied by a
per-layer 0/1 flag: layers without a table get ve = 0 and compute exactly the plain attention.
The values (and so the KV cache) include the value embedding; it is per token, so decoding
needs nothing more. Neither leaf is named "kernel": AdamW updates them (not Muon) and weight
decay leaves them alone, like the token embedding.

Smear (config.smear; modded-nanogpt's "smear token embed forward 1 position" by @classiclarryd,
2025): after the token (and position) embedding, before dropout,
    x_t = x_t + lambda * sigmoid(x_t[:G] . gate) * x_{t-1}   (t >= 1; x_0 unchanged)
with G = SMEAR_GATE_CHANNELS = 12, params["smear"]["gate"] (G,) and the scalar
params["smear"]["lambda"] (), both initialised to zero as in modded-nanogpt (so the option
starts as the identity; lambda's gradient is not zero there, so both train). Causal: token
t sees only t-1. In KV-cache decoding the previous token's embedding is kept per position in
cache/smear/previous (B, sequence_length, C), like the keys and values: a step at position
`start` reads row start-1, and bucket padding after a prompt is overwritten before any query
reads it.

The gate matmuls take compute-dtype operands with float32 results (precision.einsum_f32).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from minillm_jax.config import ModelConfig
from minillm_jax.model.precision import einsum_f32

Array = jax.Array

VE_GATE_CHANNELS = 6  # channels of x and of ve that each feed the value-embedding gates
VE_INIT_STD = 0.01  # modded-nanogpt: value_embeds = 0.01 * randn
SMEAR_GATE_CHANNELS = 12  # channels of x_t that feed the smear gate


def value_embedding_tables(n_layer: int, k: int) -> list[int]:
    """The table each layer adds to its values, -1 for none: table j -> layers j, n_layer-k+j."""
    tables = [-1] * n_layer
    for j in range(k):
        tables[j] = tables[n_layer - k + j] = j
    return tables


def value_embedding_xs(cfg: ModelConfig) -> tuple[Array, Array]:
    """Per-layer scan inputs: (table index (n,) int32, has-a-table flag (n,) float32)."""
    tables = jnp.asarray(value_embedding_tables(cfg.n_layer, cfg.value_embeddings), jnp.int32)
    return jnp.maximum(tables, 0), (tables >= 0).astype(jnp.float32)


class ValueEmbeddings(nn.Module):
    """The K tables: token ids (B, T) -> lookups (K, B, T, C) in `dtype`."""

    cfg: ModelConfig
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, idx: Array) -> Array:
        cfg = self.cfg
        tables = self.param("embedding", nn.initializers.normal(stddev=VE_INIT_STD),
                            (cfg.value_embeddings, cfg.vocab_size, cfg.n_embd), jnp.float32)
        return jnp.take(tables, idx, axis=1).astype(self.dtype)


def layer_value_embedding(lookups: Array, xs: tuple[Array, Array]) -> Array:
    """The value embedding (B, T, C) of one layer (inside the layer scan): its table's lookup,
    times 0 for layers without one."""
    index, flag = xs
    ve = jax.lax.dynamic_index_in_dim(lookups, index, axis=0, keepdims=False)
    return ve * flag.astype(ve.dtype)


def add_value_embedding(module: nn.Module, cfg: ModelConfig, dtype: jnp.dtype, x: Array,
                        v: Array, ve: Array) -> Array:
    """v (B, T, nh, hs) + 2 * sigmoid(gate) * ve per head; creates `module`'s ve_gate."""
    g = VE_GATE_CHANNELS
    w = module.param("ve_gate", nn.initializers.zeros, (2 * g, cfg.n_head), jnp.float32)
    gate_in = jnp.concatenate([x[..., :g].astype(dtype), ve[..., :g].astype(dtype)], axis=-1)
    gate = 2.0 * jax.nn.sigmoid(einsum_f32("btg,gh->bth", gate_in, w.astype(dtype)))
    b, t, h, d = v.shape
    added = gate[..., None] * ve.reshape(b, t, h, d).astype(jnp.float32)
    return v + added.astype(v.dtype)


class Smear(nn.Module):
    """x (B, T, C) -> x_t + lambda * sigmoid(x_t[:G] . gate) * x_{t-1} (module docstring).
    `start` (decode mode): x holds positions start .. start+T-1; the previous rows come from the
    "cache" collection."""

    cfg: ModelConfig
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: Array, start: Array | None = None) -> Array:
        g = SMEAR_GATE_CHANNELS
        gate = self.param("gate", nn.initializers.zeros, (g,), jnp.float32)
        lam = self.param("lambda", nn.initializers.zeros, (), jnp.float32)
        b, t, c = x.shape
        if start is None:
            first = jnp.zeros((b, 1, c), x.dtype)
        else:
            rows = self.variable("cache", "previous", jnp.zeros,
                                 (b, self.cfg.sequence_length, c), x.dtype)
            before = jax.lax.dynamic_index_in_dim(rows.value, jnp.maximum(start - 1, 0), axis=1)
            first = jnp.where(start > 0, before, 0).astype(x.dtype)
            zero = jnp.zeros((), jnp.int32)
            rows.value = jax.lax.dynamic_update_slice(rows.value, x, (zero, start, zero))
        previous = jnp.concatenate([first, x[:, :-1]], axis=1)
        weight = einsum_f32("btg,g->bt", x[..., :g].astype(self.dtype), gate.astype(self.dtype))
        share = lam * jax.nn.sigmoid(weight)
        return x + (share[..., None] * previous.astype(jnp.float32)).astype(x.dtype)
