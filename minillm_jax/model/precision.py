"""Matmul precision: the compute dtype of a model, and 16-bit matmuls with float32 results whose
backward pass stays 16-bit.

A dot of bfloat16 operands with `preferred_element_type=float32` (float32 scores or logits for a
float32 softmax) has a float32 cotangent, so autodiff's transposed dots mix a float32 operand
with a bfloat16 one; XLA's GPU backend runs such a mixed dot as float32 x float32 (several times
slower). `einsum_f32` casts the cotangent to the operands' dtype first, so both gradient matmuls
are bfloat16 x bfloat16 with float32 accumulation, as PyTorch autocast computes them.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from minillm_jax.config import ExecutionConfig, resolve_compute_dtype, resolve_dense_weight_grad

Array = jax.Array


def compute_dtype(execution: ExecutionConfig) -> jnp.dtype:
    """The matmul input dtype of `execution`; compute_dtype=auto (a model built outside
    minillm_jax.train.build, which resolves it once for the run's devices) resolves for the default
    backend."""
    return jnp.dtype(resolve_compute_dtype(execution.compute_dtype, jax.default_backend())[0])


def dense_weight_grad(execution: ExecutionConfig) -> str:
    """The Dense layers' weight-gradient form (minillm_jax/model/dense.py); "auto" (a model built
    outside minillm_jax.train.build) resolves for the default backend."""
    return resolve_dense_weight_grad(execution.dense_weight_grad, jax.default_backend())


def einsum_f32(spec: str, a: Array, b: Array) -> Array:
    """jnp.einsum(spec, a, b) with a float32 result for operands of one dtype; for 16-bit
    operands the gradients are computed by 16-bit matmuls (module docstring). Float32 operands
    take the plain einsum (identical results)."""
    if a.dtype == jnp.float32 and b.dtype == jnp.float32:
        return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)
    return _einsum_f32_16bit_grad(spec, a, b)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _einsum_f32_16bit_grad(spec: str, a: Array, b: Array) -> Array:
    return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)


def _forward(spec: str, a: Array, b: Array) -> tuple[Array, tuple[Array, Array]]:
    return _einsum_f32_16bit_grad(spec, a, b), (a, b)


def _backward(spec: str, operands: tuple[Array, Array], cotangent: Array,
              ) -> tuple[Array, Array]:
    a, b = operands
    # autodiff of the same einsum with a result in the operands' dtype: its transposed dots take
    # the 16-bit cotangent and the 16-bit operands (float32 accumulation inside the matmul)
    _, pullback = jax.vjp(lambda a, b: jnp.einsum(spec, a, b), a, b)
    return pullback(cotangent.astype(a.dtype))


_einsum_f32_16bit_grad.defvjp(_forward, _backward)
