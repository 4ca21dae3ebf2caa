"""Mixture-of-experts feed-forward layer: top-k softmax router, capacity with token dropping or
dropless grouped matmuls, load-balancing and router z-losses (Switch / GShard / ST-MoE).

Routing (per token, router in float32):
    probs = softmax(x @ router)                    (E,)
    top-k experts by probability; gates = their probabilities, renormalised to sum 1 when k > 1
    (GShard / Mixtral); with k = 1 the gate is the raw probability (Switch), so the router learns.
    output = sum over the token's kept choices of gate * expert(x); a dropped choice adds nothing
    (the block's residual carries the token through unchanged).

Implementations (config.moe_impl):
    einsum    capacity-limited experts, computed as batched einsums (GShard): tokens are split into
              groups of `moe_group_size` tokens (default: one sequence), each expert takes at most
              capacity = min(S, ceil(capacity_factor * k * S / E)) tokens per group of S tokens,
              dispatch/combine tensors (G, S, E, capacity) move tokens to expert slots and back.
    dropless  no capacity, nothing dropped: the k*N assignments are sorted by expert and the
              experts run as grouped matmuls (`jax.lax.ragged_dot`). On GPU/TPU that is a real
              grouped GEMM; on CPU JAX lowers ragged_dot to a masked dense product (E times the
              FLOPs), so prefer einsum for CPU speed.
    auto      einsum when moe_capacity_factor > 0, else dropless.

Drop priority (einsum; config.moe_priority), within a group, slots are given in this order:
    token     tokens in sequence order, a token's choices together (top-1 then top-2), then the
              next token (MaxText's order). With groups of whole sequences this is causal: whether
              token t is dropped depends only on tokens <= t, so no information leaks from the
              future (the default).
    choice    every token's top-1 choice (in sequence order) before any top-2 choice (GShard,
              Switch): protects first choices, but a token's second choice can be dropped because
              of later tokens' first choices (a small leak from the future in a causal LM).

Auxiliary losses and statistics (returned by every MoE layer with its output):
    aux_loss      n_experts * sum_e f_e * P_e, f_e = fraction of the k*N routing assignments that
                  chose expert e (before dropping), P_e = mean router probability of e. Exactly 1
                  for perfectly uniform routing (Switch eq. 4 generalised to top-k).
    z_loss        mean over tokens of logsumexp(router logits)^2 (ST-MoE).
    dropped_frac  fraction of the k*N assignments dropped by the capacity limit.
    load          f_e per expert (sums to 1).
The model (minillm_jax.model.transformer.Transformer.features, via `summarize_stats`) returns
moe_aux_loss_weight * sum_layers(aux_loss) + moe_z_loss_weight * sum_layers(z_loss) as the
auxiliary loss the train step adds to the cross entropy, and the per-layer means as statistics.

Parameters of one MoE layer (inside the stacked blocks a leading n_layer axis comes first):
    router/kernel (C, E)
    llama experts: w1/kernel (E, C, H)  w2/kernel (E, C, H)  c_proj/kernel (E, H, C)
    gpt experts:   c_fc/kernel (E, C, H) [c_fc/bias (E, H)]  c_proj/kernel (E, H, C) [c_proj/bias (E, C)]
H = moe_hidden, or the dense MLP's hidden size when moe_hidden is 0.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from minillm_jax.model.precision import compute_dtype

Array = jax.Array


def capacity(group_size: int, n_experts: int, top_k: int, factor: float) -> int:
    """Slots per expert and group: min(S, ceil(factor * k * S / E)), at least 1.

    No expert can receive more than S assignments (a token picks an expert at most once), so a
    factor >= E / k never drops anything.
    """
    return max(1, min(group_size, math.ceil(factor * top_k * group_size / n_experts)))


def route(logits: Array, top_k: int) -> tuple[Array, Array, Array]:
    """Router logits (..., E) float32 -> (probs (..., E), gates (..., k), experts (..., k))."""
    probs = jax.nn.softmax(logits, axis=-1)
    top_p, experts = jax.lax.top_k(probs, top_k)
    gates = top_p / jnp.sum(top_p, axis=-1, keepdims=True) if top_k > 1 else top_p
    return probs, gates, experts


def load_balancing_loss(probs: Array, expert_mask: Array) -> tuple[Array, Array]:
    """(n_experts * sum_e f_e * P_e, f) for probs (..., E) and the one-hot choices (..., k, E).

    f_e: fraction of all assignments routed to e; P_e: mean probability of e over tokens.
    """
    n_experts = probs.shape[-1]
    load = jnp.mean(expert_mask.reshape(-1, n_experts).astype(jnp.float32), axis=0)
    mean_prob = jnp.mean(probs.reshape(-1, n_experts), axis=0)
    return n_experts * jnp.sum(load * mean_prob), load


def z_loss(logits: Array) -> Array:
    """Mean over tokens of logsumexp(logits)^2 (ST-MoE router z-loss)."""
    return jnp.mean(jnp.square(jax.nn.logsumexp(logits, axis=-1)))


def slot_positions(expert_mask: Array, priority: str) -> Array:
    """Position of each assignment in its expert's queue, (G, S, k) from one-hot (G, S, k, E).

    `token`: order (s, j) lexicographic (sequence order, a token's choices together);
    `choice`: order (j, s) (all top-1 choices before top-2 choices).
    """
    g, s, k, e = expert_mask.shape
    if priority == "token":
        flat = expert_mask.reshape(g, s * k, e)
        pos = jnp.cumsum(flat, axis=1) - 1
        return jnp.sum(pos * flat, axis=-1).reshape(g, s, k)
    if priority == "choice":
        flat = expert_mask.transpose(0, 2, 1, 3).reshape(g, k * s, e)
        pos = jnp.cumsum(flat, axis=1) - 1
        return jnp.sum(pos * flat, axis=-1).reshape(g, k, s).transpose(0, 2, 1)
    raise ValueError(f"unknown moe_priority {priority!r}: use 'token' or 'choice'")


class ExpertParam(nn.Module):
    """A stack of per-expert Dense weights: kernel (E, in, out) and optional bias (E, out)."""

    n_experts: int
    features_in: int
    features_out: int
    std: float
    use_bias: bool

    @nn.compact
    def __call__(self) -> tuple[Array, Array | None]:
        kernel = self.param("kernel", nn.initializers.normal(stddev=self.std),
                            (self.n_experts, self.features_in, self.features_out), jnp.float32)
        bias = (self.param("bias", nn.initializers.zeros, (self.n_experts, self.features_out),
                           jnp.float32) if self.use_bias else None)
        return kernel, bias


class MoE(nn.Module):
    """Mixture of experts replacing a block's MLP: (B, T, C) -> (B, T, C).

    `cfg` is minillm_jax.model.transformer.ModelConfig (fields moe_*); experts follow the model's MLP style
    (llama: SwiGLU w1/w2/c_proj without bias or dropout; gpt: c_fc -> exact GELU -> c_proj,
    biases when cfg.bias, dropout on the output).
    """

    cfg: Any  # minillm_jax.config.ModelConfig
    execution: Any  # minillm_jax.config.ExecutionConfig
    train: bool

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, dict[str, Array]]:
        cfg, dtype = self.cfg, compute_dtype(self.execution)
        b, t, c = x.shape
        n_exp, k, hidden = cfg.moe_n_experts, cfg.moe_top_k, cfg.expert_hidden
        router = nn.Dense(n_exp, use_bias=False, dtype=jnp.float32, param_dtype=jnp.float32,
                          kernel_init=nn.initializers.normal(cfg.init_std), name="router")
        expert = lambda fin, fout, std, name, bias: ExpertParam(  # noqa: E731
            n_exp, fin, fout, std, bias, name=name)()
        proj_std = 0.0 if cfg.zero_init_proj else cfg.proj_std
        bias = cfg.bias and cfg.model == "gpt"
        if cfg.mlp_activation == "swiglu":
            weights = {"w1": expert(c, hidden, cfg.init_std, "w1", bias),
                       "w2": expert(c, hidden, cfg.init_std, "w2", bias),
                       "c_proj": expert(hidden, c, proj_std, "c_proj", bias)}
        else:
            weights = {"c_fc": expert(c, hidden, cfg.init_std, "c_fc", bias),
                       "c_proj": expert(hidden, c, proj_std, "c_proj", bias)}
        weights = jax.tree.map(lambda w: w.astype(dtype), weights)

        logits = router(x.astype(jnp.float32))  # (B, T, E)
        x = x.astype(dtype)  # expert matmul inputs in the compute dtype
        probs, gates, experts = route(logits, k)
        expert_mask = jax.nn.one_hot(experts, n_exp, dtype=jnp.int32)  # (B, T, k, E)
        aux, load = load_balancing_loss(probs, expert_mask)

        if cfg.moe_impl_resolved == "dropless":
            y = _dropless(x.reshape(b * t, c), gates.reshape(b * t, k),
                          experts.reshape(b * t, k), weights, cfg.mlp_activation, n_exp)
            dropped = jnp.zeros((), jnp.float32)
        else:
            # moe_group_size divides the tokens of every batch (minillm_jax.config checks it)
            group = min(cfg.moe_group_size or t, b * t)
            g = b * t // group
            y, kept = _capacity_einsum(
                x.reshape(g, group, c), gates.reshape(g, group, k),
                expert_mask.reshape(g, group, k, n_exp), weights, cfg.mlp_activation,
                capacity(group, n_exp, k, cfg.moe_capacity_factor), cfg.moe_priority)
            dropped = 1.0 - jnp.mean(kept.astype(jnp.float32))
        y = y.reshape(b, t, c)
        if cfg.model == "gpt":
            y = nn.Dropout(cfg.dropout, deterministic=not self.train)(y)
        stats = {"aux_loss": aux, "z_loss": z_loss(logits), "dropped_frac": dropped, "load": load}
        return y, stats


def _ffn_einsum(h: Array, weights: dict, style: str) -> Array:
    """Every expert on its slots at once: h (E, G, slots, C) -> (E, G, slots, C)."""
    def dense(v, name):
        kernel, bias = weights[name]
        out = jnp.einsum("egsi,eio->egso", v, kernel)
        return out if bias is None else out + bias[:, None, None, :]

    return _ffn(dense, h, style)


def _ffn(dense: Any, h: Array, style: str) -> Array:
    """The experts' MLP for activation `style` (as minillm_jax.model.transformer.MLP)."""
    if style == "swiglu":
        return dense(nn.silu(dense(h, "w1")) * dense(h, "w2"), "c_proj")
    h = dense(h, "c_fc")
    h = nn.gelu(h, approximate=False) if style == "gelu" else jnp.square(nn.relu(h))
    return dense(h, "c_proj")


def _capacity_einsum(x: Array, gates: Array, expert_mask: Array, weights: dict, style: str,
                     cap: int, priority: str) -> tuple[Array, Array]:
    """x (G, S, C), gates (G, S, k), one-hot choices (G, S, k, E) -> (y (G, S, C), kept (G, S, k))."""
    pos = slot_positions(expert_mask, priority)  # (G, S, k)
    kept = pos < cap
    slot = jax.nn.one_hot(jnp.where(kept, pos, cap), cap, dtype=x.dtype)  # (G, S, k, cap); 0 if dropped
    mask = expert_mask.astype(x.dtype)
    dispatch = jnp.einsum("gske,gskc->gsec", mask, slot)  # 0/1
    combine = jnp.einsum("gske,gskc->gsec", mask * gates.astype(x.dtype)[..., None], slot)
    expert_in = jnp.einsum("gsec,gsm->egcm", dispatch, x)  # (E, G, cap, C)
    expert_out = _ffn_einsum(expert_in, weights, style)
    y = jnp.einsum("egcm,gsec->gsm", expert_out, combine)
    return y, kept


def _dropless(x: Array, gates: Array, experts: Array, weights: dict, style: str,
              n_experts: int) -> Array:
    """x (N, C), gates/experts (N, k) -> (N, C) with grouped matmuls over expert-sorted rows."""
    n, k = experts.shape
    flat = experts.reshape(-1)  # assignment a = token * k + j
    order = jnp.argsort(flat, stable=True)
    rows = x[order // k]  # (N*k, C), grouped by expert
    sorted_experts = flat[order]
    group_sizes = jnp.bincount(flat, length=n_experts).astype(jnp.int32)

    def dense(v, name):
        kernel, bias = weights[name]
        out = jax.lax.ragged_dot(v, kernel, group_sizes)
        return out if bias is None else out + bias[sorted_experts]

    out = _ffn(dense, rows, style)
    out = out[jnp.argsort(order)].reshape(n, k, -1)  # back to assignment order
    return jnp.einsum("nkc,nk->nc", out, gates.astype(out.dtype))


def summarize_stats(stats: dict[str, Array], cfg: Any) -> tuple[Array, dict[str, Array]]:
    """(auxiliary loss, logged statistics) from the MoE statistics of the stacked blocks, each
    (n_layer,) ((n_layer, E) for load) and summed over the MoE sublayers of a block.

    The auxiliary loss is moe_aux_loss_weight * sum(aux_loss) + moe_z_loss_weight * sum(z_loss)
    over all MoE layers; the statistics are per-MoE-layer means: moe_aux_loss, moe_z_loss,
    moe_dropped_frac and moe_load_e0.. (the fraction of assignments to each expert).
    """
    n_layers = cfg.n_layer * cfg.sublayer_kinds.count("moe")
    aux_sum, z_sum = jnp.sum(stats["aux_loss"]), jnp.sum(stats["z_loss"])
    load = jnp.sum(stats["load"], axis=0) / n_layers
    out = {"moe_aux_loss": aux_sum / n_layers, "moe_z_loss": z_sum / n_layers,
           "moe_dropped_frac": jnp.sum(stats["dropped_frac"]) / n_layers}
    out.update({f"moe_load_e{e}": load[e] for e in range(load.shape[0])})
    return cfg.moe_aux_loss_weight * aux_sum + cfg.moe_z_loss_weight * z_sum, out
