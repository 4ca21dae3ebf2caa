"""Causal self-attention kernels, and the choice between them for a device.

Two paths compute softmax(q k^T / sqrt(d) + causal mask) v:
  cudnn  `jax.nn.dot_product_attention(implementation="cudnn")`: cuDNN's fused (flash) kernel.
         It never materialises the (B, H, T, T) scores; GPU only, 16-bit inputs, head dim a
         multiple of 8 (at most 128 before Hopper, 256 on Hopper and later). `auto` checks once,
         with a tiny compile and run, that it works on the device, and takes XLA if not.
  xla    the reference formulation (`xla_attention`), compiled by XLA: scores and probabilities
         are (B, H, T, T) arrays (softmax in float32), kept for the backward pass. Any device,
         any dtype; in float32 by blocks of query rows that skip the keys above the diagonal
         (`causal_attention_by_blocks`). With 16-bit inputs every matmul, gradients included,
         takes 16-bit operands (minillm_jax.model.precision.einsum_f32);
         jax.nn.dot_product_attention's XLA path feeds its float32 score gradients to the
         backward matmuls, which GPUs then run in float32.
Attention-probability dropout (llm-baselines' `dropout`, used for attention too) exists in
neither public API, so training with it uses `dropout_attention` below: the XLA formulation with
dropout on the probabilities, rematerialised (jax.checkpoint), so that the backward pass
recomputes the (B, H, T, T) tensors of one layer at a time instead of storing them for all
layers. The masks are drawn with XLA's RngBitGenerator (`dropout_keep_mask`), several times
cheaper than threefry over B x H x T x T elements. Evaluation has no dropout and takes the chosen
kernel.

Sliding-window attention (config.attention_window = W > 0; Longformer, Beltagy et al. 2020;
Mistral 7B; modded-nanogpt's short/long-window layers): query t sees keys (t - W, t], i.e. itself
and the W - 1 keys before it. Every kernel takes `window` (keys visible, self included; 0 = full
causal): the XLA paths AND a band into the causal mask (`visible`), xla_blocks also skips the key
blocks wholly left of the band when the window is a Python int, cuDNN gets
local_window_size=(W - 1, 0) and skips the blocks outside the band itself. A window that differs
between the layers of one scanned program (attention_window_layers != "all") is a traced
per-layer flag `windowed`: the XLA paths turn it into a traced window (T = full), cuDNN, whose
window is static, runs a lax.cond between its windowed and full kernels (one branch executes per
layer; both are compiled). modded-nanogpt also grows the window during training (window warm-up);
that is left out: the window would be a traced value changing every few steps, which cuDNN's
static local_window_size cannot take (a recompile per size) and which would stop xla_blocks
skipping blocks.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from minillm_jax.config import ConfigError
from minillm_jax.model.precision import einsum_f32

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


def _xla_kernel(platform: str, compute_dtype: str) -> str:
    """The XLA formulation for a platform: by blocks of query rows for float32 on CPUs, where it
    halves the attention time (`causal_attention_by_blocks`), the plain one elsewhere (a GPU's
    float32 run, e.g. gpu_check's reference, keeps XLA's own fusions)."""
    return "xla_blocks" if platform == "cpu" and compute_dtype == "float32" else "xla"


def choose_attention(requested: str, *, platform: str, device_kind: str, compute_dtype: str,
                     head_dim: int, attention_dropout: float) -> AttentionChoice:
    """The attention kernel for `requested` (auto | xla | xla_blocks | cudnn) on a device; "xla"
    is "xla_blocks" for float32 on a CPU (`_xla_kernel`).

    auto: cuDNN wherever it can run, XLA elsewhere. An explicit cudnn that cannot run is a
    ConfigError saying why and what to use instead.
    """
    problem = _cudnn_problem(platform, device_kind, compute_dtype, head_dim)
    dropout_note = (f"; training applies attention dropout {attention_dropout} on the "
                    "rematerialised XLA path (no fused kernel has probability dropout)"
                    if attention_dropout > 0 else "")
    xla = _xla_kernel(platform, compute_dtype)
    if requested in ("xla", "xla_blocks"):
        return AttentionChoice("xla_blocks" if requested == "xla_blocks" else xla,
                               f"attention_impl={requested}" + dropout_note)
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
        return AttentionChoice(xla, f"auto: no cuDNN fused attention because {problem}")
    return AttentionChoice("cudnn", f"auto: cuDNN fused attention on {device_kind} in "
                                    f"{compute_dtype}" + dropout_note)


def fused_config_advice(choice: AttentionChoice, attention_dropout: float) -> str | None:
    """The one line a run with attention-probability dropout gets where cuDNN fused attention
    could run (best.py on a GPU): training stays on the XLA path, and best_fused.py, the same
    recipe without that one regulariser, is predicted much faster by the GPU compiler's own
    program (docs/performance.md "The GPU step, compiled without a GPU")."""
    if choice.impl != "cudnn" or attention_dropout <= 0:
        return None
    return (f"note: attention dropout {attention_dropout} keeps training attention on the XLA "
            "path; configs/best_fused.py (the same recipe without attention-probability dropout, "
            "cuDNN fused attention) is predicted 2.4x faster per step on an H100 and 2.2x on an "
            "A100 (python tools/gpu_aot.py; docs/performance.md)")


def visible(q_positions: Array, k_len: int, window: int | Array = 0) -> Array:
    """(Tq, k_len) bool: query position p sees key positions j <= p, and with window W > 0
    only those with p - j < W (the band (p - W, p]). W may be traced."""
    keys = jnp.arange(k_len)[None, :]
    rows = q_positions[:, None]
    mask = keys <= rows
    if isinstance(window, int) and window <= 0:
        return mask
    return mask & (rows - keys < window)


def causal_attention(q: Array, k: Array, v: Array, *, dropout_rate: float,
                     dropout_rng: Array | None, implementation: str, window: int = 0,
                     windowed: Array | None = None) -> Array:
    """Causal softmax attention over (B, T, nh, hs), with dropout on the probabilities when a
    dropout key is given (training). window > 0: sliding window of that many keys (module
    docstring); `windowed`, a traced bool, applies it only where true (per-layer patterns)."""
    use_dropout = dropout_rng is not None and dropout_rate > 0.0
    if window > 0 and windowed is not None:
        if implementation == "cudnn" and not use_dropout:
            kernel = functools.partial(causal_attention, dropout_rate=0.0, dropout_rng=None,
                                       implementation="cudnn")
            return jax.lax.cond(windowed, lambda: kernel(q, k, v, window=window),
                                lambda: kernel(q, k, v))
        window = jnp.where(windowed, window, q.shape[1])  # traced; T keys = full causal
    if not use_dropout:
        if implementation == "cudnn":
            local = (window - 1, 0) if window > 0 else None
            return jax.nn.dot_product_attention(q, k, v, is_causal=True, local_window_size=local,
                                                implementation="cudnn")
        if implementation == "xla_blocks":
            return causal_attention_by_blocks(q, k, v, window=window)
        return xla_attention(q, k, v, window)
    if isinstance(window, int) and window <= 0:  # full causal: the program without a band
        return dropout_attention(q, k, v, dropout_rng, dropout_rate)
    return dropout_attention(q, k, v, dropout_rng, dropout_rate, jnp.asarray(window, jnp.int32))


def dropout_keep_mask(rng: Array, rate: float, shape: tuple[int, ...]) -> Array:
    """Bernoulli(1 - rate) keep mask of `shape` for dropout key `rng` (any key type).

    The bits come from an "rbg" key (XLA's RngBitGenerator, Philox on CPU and GPU: a fraction of
    threefry's work per element) derived from `rng` by one threefry draw, so the same key gives
    the same mask and a resumed run redraws the masks it would have drawn. Unlike threefry's, the
    masks differ between CPU, GPU and TPU, and JAX documents rbg as not efficiently shardable:
    with the batch split over several devices, each may generate the whole array."""
    words = jax.random.bits(rng, (4,), jnp.uint32)
    return jax.random.bernoulli(jax.random.wrap_key_data(words, impl="rbg"), 1.0 - rate, shape)


def _attention(q: Array, k: Array, v: Array, rng: Array | None, rate: float,
               window: int | Array = 0) -> Array:
    """The XLA formulation, with dropout on the probabilities when `rng` is given: float32
    scores and softmax, matmuls on the inputs' dtype. window: `visible`'s band (0 = none)."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = einsum_f32("bqhd,bkhd->bhqk", q, k) * scale
    t = q.shape[1]
    mask = visible(jnp.arange(t), t, window)
    scores = jnp.where(mask[None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1)
    if rng is not None:
        keep = dropout_keep_mask(rng, rate, probs.shape)
        probs = jnp.where(keep, probs / (1.0 - rate), 0.0)
    return jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v)


def xla_attention(q: Array, k: Array, v: Array, window: int | Array = 0) -> Array:
    """Causal attention, XLA formulation, no dropout (q, k, v: (B, T, nh, hs), one dtype);
    window > 0: sliding window (`visible`)."""
    return _attention(q, k, v, None, 0.0, window)


def causal_attention_by_blocks(q: Array, k: Array, v: Array, n_blocks: int = 4,
                               window: int | Array = 0) -> Array:
    """Float32 causal attention over (B, T, nh, hs), one block of query rows at a time, each
    against only the keys up to its last row: the key blocks above the diagonal, all masked,
    are never multiplied (5/8 of the full product's score and value FLOPs for 4 blocks).

    q, k and v are first laid out as (B, nh, T, hs), so that every product is a plain batched
    matmul (an optimisation barrier keeps XLA from folding the transposes back into the dots).
    On a 2-core AVX-512 Xeon, one layer of configs/bench_cpu.py (B 16, T 256, 4 heads of 64),
    forward and backward: 47.6-51.5 ms (min-median) against 101-109 ms for
    `jax.nn.dot_product_attention(implementation="xla")` (interleaved runs); with 2 blocks
    56-60 ms, with 8 blocks 52-57 ms. Same values to float32 rounding. A length that n_blocks
    does not divide, or under 64, takes one block. A static window > 0 also skips the key blocks
    wholly left of the band (keys from start - window + 1 on); a traced one only masks."""
    b, t, h, d = q.shape
    if t % n_blocks or t < 64:
        n_blocks = 1
    q = q * (1.0 / math.sqrt(d))
    q, k, v = jax.lax.optimization_barrier(tuple(jnp.swapaxes(x, 1, 2) for x in (q, k, v)))
    rows = t // n_blocks
    outputs = []
    for i in range(n_blocks):
        start, end = i * rows, (i + 1) * rows
        first = max(0, start - window + 1) if isinstance(window, int) and window > 0 else 0
        scores = jnp.einsum("bhqd,bhkd->bhqk", q[:, :, start:end], k[:, :, first:end])
        mask = visible(jnp.arange(start, end) - first, end - first, window)
        scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1)
        outputs.append(jnp.einsum("bhqk,bhkd->bhqd", probs, v[:, :, first:end]))
    return jnp.swapaxes(jnp.concatenate(outputs, axis=2), 1, 2)


def _dropout_attention(q: Array, k: Array, v: Array, rng: Array, rate: float,
                       window: Array | int = 0) -> Array:
    """The XLA formulation with dropout on the probabilities (softmax in float32); window > 0:
    sliding window (`visible`; an array here, so static and traced windows share a program)."""
    return _attention(q, k, v, rng, rate, window)


# Saves only the inputs: the backward pass recomputes scores, probabilities and the dropout mask
# (the same key gives the same mask), one layer at a time.
dropout_attention = jax.checkpoint(_dropout_attention, static_argnums=(4,))


@functools.lru_cache(maxsize=None)
def cudnn_attention_error(device: jax.Device, compute_dtype: str, head_dim: int) -> str | None:
    """Why cuDNN fused attention cannot run on `device` ("ExceptionType: first line"), or None:
    a tiny causal attention and its gradient, compiled and run once per device, dtype and head
    dim (a missing or too old cuDNN library, an unsupported GPU)."""
    x = jax.device_put(np.full((1, 128, 1, head_dim), 0.1, jnp.dtype(compute_dtype)), device)

    def loss(q, k, v):
        out = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn")
        return jnp.sum(out.astype(jnp.float32))

    try:
        # a model traced outside build_run resolves its kernel while being traced: run the
        # probe now rather than stage it into that program
        with jax.ensure_compile_time_eval():
            jax.block_until_ready(jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(x, x, x))
    except Exception as err:  # noqa: BLE001 - any failure means "use XLA"
        first_line = (str(err).strip().splitlines() or [""])[0]
        return f"{type(err).__name__}: {first_line}"[:300]
    return None


def attention_for_device(requested: str, compute_dtype: str, head_dim: int,
                         attention_dropout: float, device: jax.Device | None = None,
                         ) -> AttentionChoice:
    """choose_attention for `device` (default: the first device). When cuDNN is chosen, a tiny
    compile and run checks that it works there (cudnn_attention_error): auto falls back to XLA
    and says why; an explicit cudnn that fails is a ConfigError."""
    device = device or jax.devices()[0]
    choice = choose_attention(requested, platform=device.platform, device_kind=device.device_kind,
                              compute_dtype=compute_dtype, head_dim=head_dim,
                              attention_dropout=attention_dropout)
    if choice.impl != "cudnn":
        return choice
    error = cudnn_attention_error(device, compute_dtype, head_dim)
    if error is None:
        return choice
    if requested == "cudnn":
        raise ConfigError(f"config.attention_impl='cudnn' failed a test run on "
                          f"{device.device_kind} ({error}). Use attention_impl=auto (or xla)")
    return AttentionChoice("xla", f"auto: cuDNN fused attention failed a test run on "
                                  f"{device.device_kind} ({error}), so XLA attention")
