"""Causal self-attention kernels, and the choice between them for a device.

Two paths compute softmax(q k^T / sqrt(d) + causal mask) v:
  cudnn  `jax.nn.dot_product_attention(implementation="cudnn")`: cuDNN's fused (flash) kernel.
         It never materialises the (B, H, T, T) scores; GPU only, 16-bit inputs, head dim a
         multiple of 8 (at most 128 before Hopper, 256 on Hopper and later).
  xla    JAX's reference formulation, compiled by XLA: scores and probabilities are (B, H, T, T)
         arrays (softmax in float32), kept for the backward pass. Any device, any dtype.
Attention-probability dropout (llm-baselines' `dropout`, used for attention too) exists in
neither public API, so training with it uses `dropout_attention` below: the XLA formulation with
dropout on the probabilities, rematerialised (jax.checkpoint), so that the backward pass
recomputes the (B, H, T, T) tensors of one layer at a time instead of storing them for all
layers. Evaluation has no dropout and takes the chosen kernel.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from minillm_jax.config import ConfigError

Array = jax.Array

FUSED_DTYPES = ("bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class AttentionChoice:
    """The kernel for attention without dropout ("xla" | "cudnn") and why it was chosen."""

    impl: str
    reason: str


def _cudnn_problem(platform: str, device_kind: str, compute_dtype: str, head_dim: int,
                   ) -> str | None:
    """Why cuDNN fused attention cannot run here, or None."""
    if platform not in ("gpu", "cuda"):
        return f"it needs an NVIDIA GPU (this device is {platform})"
    if compute_dtype not in FUSED_DTYPES:
        return f"it needs a 16-bit compute dtype (compute_dtype is {compute_dtype})"
    if head_dim % 8:
        return f"it needs a head dim that is a multiple of 8 (n_embd/n_head = {head_dim})"
    hopper_or_later = any(name in device_kind.lower() for name in ("h100", "h200", "h800", "gh200",
                                                                    "b100", "b200", "gb200"))
    limit = 256 if hopper_or_later else 128
    if head_dim > limit:
        return f"it supports head dims up to {limit} on {device_kind} (n_embd/n_head = {head_dim})"
    return None


def choose_attention(requested: str, *, platform: str, device_kind: str, compute_dtype: str,
                     head_dim: int, attention_dropout: float) -> AttentionChoice:
    """The attention kernel for `requested` (auto | xla | cudnn) on a device.

    auto: cuDNN wherever it can run, XLA elsewhere. An explicit cudnn that cannot run is a
    ConfigError saying why and what to use instead.
    """
    problem = _cudnn_problem(platform, device_kind, compute_dtype, head_dim)
    dropout_note = (f"; training applies attention dropout {attention_dropout} on the "
                    "rematerialised XLA path (no fused kernel has probability dropout)"
                    if attention_dropout > 0 else "")
    if requested == "xla":
        return AttentionChoice("xla", "attention_impl=xla" + dropout_note)
    if requested == "cudnn":
        if problem:
            raise ConfigError(f"config.attention_impl='cudnn' cannot run: {problem}. Use "
                              "attention_impl=auto (or xla)")
        if attention_dropout > 0:
            raise ConfigError(
                f"config.attention_impl='cudnn' has no attention-probability dropout, but the "
                f"attention dropout is {attention_dropout}: set attention_dropout=0 (e.g. "
                "configs/best_fused.py) or attention_impl=auto")
        return AttentionChoice("cudnn", "attention_impl=cudnn")
    if problem:
        return AttentionChoice("xla", f"auto: no cuDNN fused attention because {problem}")
    return AttentionChoice("cudnn", f"auto: cuDNN fused attention on {device_kind} in "
                                    f"{compute_dtype}" + dropout_note)


def causal_attention(q: Array, k: Array, v: Array, *, dropout_rate: float,
                     dropout_rng: Array | None, implementation: str) -> Array:
    """Causal softmax attention over (B, T, nh, hs), with dropout on the probabilities when a
    dropout key is given (training)."""
    if dropout_rng is None or dropout_rate == 0.0:
        return jax.nn.dot_product_attention(q, k, v, is_causal=True,
                                            implementation=implementation)
    return dropout_attention(q, k, v, dropout_rng, dropout_rate)


def _dropout_attention(q: Array, k: Array, v: Array, rng: Array, rate: float) -> Array:
    """The XLA formulation with dropout on the probabilities (softmax in float32)."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
    t = q.shape[1]
    mask = jnp.tril(jnp.ones((t, t), dtype=bool))
    scores = jnp.where(mask[None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1)
    keep = jax.random.bernoulli(rng, 1.0 - rate, probs.shape)
    probs = jnp.where(keep, probs / (1.0 - rate), 0.0).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


# Saves only the inputs: the backward pass recomputes scores, probabilities and the dropout mask
# (the same key gives the same mask), one layer at a time.
dropout_attention = jax.checkpoint(_dropout_attention, static_argnums=(4,))


def attention_for_device(requested: str, compute_dtype: str, head_dim: int,
                         attention_dropout: float, device: jax.Device | None = None,
                         ) -> AttentionChoice:
    """choose_attention for `device` (default: the first device)."""
    device = device or jax.devices()[0]
    return choose_attention(requested, platform=device.platform, device_kind=device.device_kind,
                            compute_dtype=compute_dtype, head_dim=head_dim,
                            attention_dropout=attention_dropout)
