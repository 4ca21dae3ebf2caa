"""AdamW with block-wise 8-bit moments (in the spirit of bitsandbytes' 8-bit optimizers).

Storage scheme, for matrices (config.opt=adamw8bit quantises Dense `kernel`s and `embedding`s)
with at least `min_size` elements; norm scales, biases and small tensors keep float32 moments,
as bitsandbytes does:

- Blocks are `block_size` consecutive elements along the LAST axis (the last axis is zero-padded
  up to a multiple of min(block_size, last_dim)), so a quantised moment has the parameter's shape
  (plus padding) and is sharded like the parameter; scales have shape (..., n_blocks).
- First moment m: signed linear int8. Per block s = absmax(m) (float32) and q = round(127 m / s)
  in [-127, 127]. Round-to-nearest error |m - m~| <= s/254; stochastic rounding (default) is
  unbiased with |m - m~| < s/127.
- Second moment v: stored as u = sqrt(v) (the quantity the update divides by) on a logarithmic
  ("dynamic exponent") uint8 code. Per block M = absmax(u) (float32); code 0 is exactly 0, code
  k in 1..255 means u = M * 2^((k - 255) / 16): 16 levels per octave over 2^-15.9 of dynamic
  range, i.e. the same RELATIVE precision for small and large second moments. Nearest rounding:
  |u~/u - 1| <= 2^(1/32) - 1 = 2.2%, so |v~/v - 1| <= 2^(1/16) - 1 = 4.4%; stochastic rounding
  (unbiased in u): |u~/u - 1| < 2^(1/16) - 1 = 4.4%, |v~/v - 1| < 9.1%. Non-zero values below the
  range round UP to code 1 (a larger denominator, i.e. a smaller, safe update; never 0).
- Stochastic rounding uses a counter-based hash of (step, tensor, element) instead of a PRNG key:
  no extra state, deterministic, and cheap. Without it, an EMA whose per-step change is below half
  a quantisation step never moves (e.g. m stays 0 for elements whose gradients are < 4% of their
  block's absmax); stochastic rounding keeps the moments unbiased in expectation.

Each step dequantises to float32, applies the usual Adam update in float32 (the update uses the
unrounded moments), and re-quantises. State per quantised element: 1 byte m + 1 byte v + 8 bytes
of scales per block (0.03 bytes/element at block 256): about 2.03 bytes vs 8 for float32 AdamW.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

M_LEVELS = 127  # signed int8 linear code for m: q in [-127, 127]
V_STEPS_PER_OCTAVE = 16  # log2 code for sqrt(v): 255 non-zero levels, 16 per factor of 2
V_MIN_EXP = -254 / V_STEPS_PER_OCTAVE  # log2 of the smallest non-zero level relative to absmax


class QuantizedArray(NamedTuple):
    """A block-quantised float array: `q` has the original shape with the last axis padded to a
    multiple of `block`; `scale` holds one float32 absmax per block, shape (..., n_blocks)."""

    q: jax.Array
    scale: jax.Array


class ScaleByAdam8bitState(NamedTuple):
    count: jax.Array  # int32 scalar
    mu: Any  # tree of QuantizedArray (int8) or float32 arrays (small tensors)
    nu: Any  # tree of QuantizedArray (uint8, sqrt-domain log code) or float32 arrays


def _block(last_dim: int, block_size: int) -> int:
    return max(1, min(block_size, last_dim))


def _blocked(x: jax.Array, block_size: int) -> tuple[jax.Array, int]:
    """x (..., n) float32 -> (..., nb, B) zero-padded, plus the original n."""
    x = x.reshape(x.shape or (1,))
    n = x.shape[-1]
    b = _block(n, block_size)
    nb = -(-n // b)
    if nb * b != n:
        x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, nb * b - n)])
    return x.reshape(*x.shape[:-1], nb, b), n


def _unblocked(xb: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    x = xb.reshape(*xb.shape[:-2], -1)
    n = shape[-1] if shape else 1
    return x[..., :n].reshape(shape)


def quantized_shapes(shape: tuple[int, ...], block_size: int,
                     ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(q shape, scale shape) of a tensor of `shape`."""
    shape = tuple(shape) or (1,)
    b = _block(shape[-1], block_size)
    nb = -(-shape[-1] // b)
    return shape[:-1] + (nb * b,), shape[:-1] + (nb,)


def zeros_quantized(shape: tuple[int, ...], dtype: Any, block_size: int) -> QuantizedArray:
    """The quantised zero tensor (code 0 is exactly 0 in both codes)."""
    q_shape, s_shape = quantized_shapes(shape, block_size)
    return QuantizedArray(jnp.zeros(q_shape, dtype), jnp.zeros(s_shape, jnp.float32))


def _hash32(x: jax.Array) -> jax.Array:
    """lowbias32 integer hash (uint32 -> uint32)."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _uniform(shape: tuple[int, ...], seed: jax.Array) -> jax.Array:
    """Uniform [0, 1) float32 noise from hash(seed, element index)."""
    idx = jax.lax.iota(jnp.uint32, math.prod(shape)).reshape(shape)
    bits = _hash32(idx * jnp.uint32(0x9E3779B1) + _hash32(jnp.asarray(seed, jnp.uint32)))
    return (bits >> 8).astype(jnp.float32) * (1.0 / (1 << 24))


def quantize_m(x: jax.Array, block_size: int = 256, seed: Optional[jax.Array] = None,
               ) -> QuantizedArray:
    """Signed linear int8 per block. seed=None: round to nearest; else stochastic rounding."""
    xb, _ = _blocked(x.astype(jnp.float32), block_size)
    scale = jnp.max(jnp.abs(xb), axis=-1)
    inv = jnp.where(scale > 0, M_LEVELS / jnp.where(scale > 0, scale, 1.0), 0.0)
    y = xb * inv[..., None]
    if seed is None:
        y = jnp.round(y)
    else:
        y = jnp.floor(y + _uniform(y.shape, seed))
    q = jnp.clip(y, -M_LEVELS, M_LEVELS).astype(jnp.int8)
    return QuantizedArray(q.reshape(*q.shape[:-2], -1), scale)


def dequantize_m(qa: QuantizedArray, shape: tuple[int, ...]) -> jax.Array:
    qb = qa.q.reshape(*qa.scale.shape, -1).astype(jnp.float32)
    return _unblocked(qb * (qa.scale / M_LEVELS)[..., None], shape)


def quantize_u(u: jax.Array, block_size: int = 256, seed: Optional[jax.Array] = None,
               ) -> QuantizedArray:
    """Non-negative u (sqrt of the second moment) on the per-block log2 code (module docstring)."""
    ub, _ = _blocked(u.astype(jnp.float32), block_size)
    scale = jnp.max(ub, axis=-1)
    safe = jnp.where(scale > 0, scale, 1.0)[..., None]
    # Position on the code: 255 at the block max, 1 at 2^V_MIN_EXP of it.
    pos = 255.0 + V_STEPS_PER_OCTAVE * jnp.log2(jnp.maximum(ub / safe, 1e-30))
    if seed is None:
        k = jnp.round(pos)
    else:  # unbiased in u: P(up) = (u - lo) / (hi - lo) between the two neighbouring levels
        lo = jnp.floor(pos)
        u_lo = jnp.exp2((lo - 255.0) / V_STEPS_PER_OCTAVE)
        frac = (ub / safe - u_lo) / (u_lo * (2.0 ** (1.0 / V_STEPS_PER_OCTAVE) - 1.0))
        k = lo + (_uniform(ub.shape, seed) < frac)
    k = jnp.where(ub > 0, jnp.clip(k, 1.0, 255.0), 0.0)
    q = k.astype(jnp.uint8)
    return QuantizedArray(q.reshape(*q.shape[:-2], -1), scale)


def dequantize_u(qa: QuantizedArray, shape: tuple[int, ...]) -> jax.Array:
    k = qa.q.reshape(*qa.scale.shape, -1).astype(jnp.float32)
    ub = jnp.where(k > 0, jnp.exp2((k - 255.0) / V_STEPS_PER_OCTAVE), 0.0) * qa.scale[..., None]
    return _unblocked(ub, shape)


def _is_q(x) -> bool:
    return isinstance(x, QuantizedArray)


def scale_by_adam_8bit(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                       block_size: int = 256, min_size: int = 4096,
                       stochastic_round: bool = True,
                       quantize: Optional[Callable[[Any], Any]] = None,
                       ) -> optax.GradientTransformation:
    """optax.scale_by_adam (eps outside the sqrt, bias-corrected) with 8-bit moments for every
    tensor of at least `min_size` elements that `quantize(params)` (a tree of bools, like an
    optax mask; default all) marks (module docstring). The others keep float32 moments."""

    def init_fn(params):
        marks = quantize(params) if quantize is not None else jax.tree.map(lambda _: True, params)

        def zeros(dtype):
            def make(p, mark):
                if mark and p.size >= min_size:
                    return zeros_quantized(p.shape, dtype, block_size)
                return jnp.zeros(p.shape, jnp.float32)
            return make

        return ScaleByAdam8bitState(count=jnp.zeros([], jnp.int32),
                                    mu=jax.tree.map(zeros(jnp.int8), params, marks),
                                    nu=jax.tree.map(zeros(jnp.uint8), params, marks))

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        c1 = 1.0 - b1 ** count.astype(jnp.float32)
        c2 = 1.0 - b2 ** count.astype(jnp.float32)
        leaves, treedef = jax.tree.flatten(updates)
        mus = treedef.flatten_up_to(state.mu)
        nus = treedef.flatten_up_to(state.nu)
        new_u, new_m, new_n = [], [], []
        for i, (g, mq, nq) in enumerate(zip(leaves, mus, nus)):
            g32 = g.astype(jnp.float32)
            if _is_q(mq):
                m = dequantize_m(mq, g.shape)
                v = jnp.square(dequantize_u(nq, g.shape))
            else:
                m, v = mq, nq
            m = b1 * m + (1.0 - b1) * g32
            v = b2 * v + (1.0 - b2) * jnp.square(g32)
            new_u.append((m / c1 / (jnp.sqrt(v / c2) + eps)).astype(g.dtype))
            if _is_q(mq):
                seed_m = seed_v = None
                if stochastic_round:
                    base = count.astype(jnp.uint32) * jnp.uint32(0x85EBCA6B) + jnp.uint32(2 * i)
                    seed_m, seed_v = base, base + jnp.uint32(1)
                new_m.append(quantize_m(m, block_size, seed_m))
                new_n.append(quantize_u(jnp.sqrt(v), block_size, seed_v))
            else:
                new_m.append(m)
                new_n.append(v)
        return (treedef.unflatten(new_u),
                ScaleByAdam8bitState(count=count, mu=treedef.unflatten(new_m),
                                     nu=treedef.unflatten(new_n)))

    return optax.GradientTransformation(init_fn, update_fn)


def adamw_8bit(learning_rate: optax.ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
               eps: float = 1e-8, weight_decay: float = 1e-4, mask: Any = None,
               block_size: int = 256, min_size: int = 4096, stochastic_round: bool = True,
               quantize: Optional[Callable[[Any], Any]] = None) -> optax.GradientTransformation:
    """optax.adamw with 8-bit moments: same chain (scale_by_adam, add_decayed_weights with
    mask, scale_by_learning_rate), same decoupled weight decay."""
    return optax.chain(
        scale_by_adam_8bit(b1, b2, eps, block_size, min_size, stochastic_round, quantize),
        optax.add_decayed_weights(weight_decay, mask),
        optax.scale_by_learning_rate(learning_rate),
    )


def tree_bytes(tree: Any) -> int:
    """Bytes of all array leaves (arrays or ShapeDtypeStructs) of a tree."""
    return int(sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize
                   for x in jax.tree.leaves(tree) if hasattr(x, "dtype")))
