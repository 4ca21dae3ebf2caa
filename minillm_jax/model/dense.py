"""The Dense layers' matmul with a weight gradient that XLA:CPU runs on its fast kernels.

flax's `nn.Dense` computes y = x @ W with `lax.dot_general`, and autodiff gives the weight
gradient dW = x^T @ dy as one dot contracting the token dimension of both operands. XLA:CPU has
no fast kernel for that form: it has the op that produces dy (the GELU backward of an MLP, say)
write dy transposed, a strided write, or gives the dot to a slower kernel. Here the smaller of x
and dy is transposed into a buffer of its own (an optimisation barrier keeps XLA from folding the
transpose back into the dot), so the weight gradient is a plain (C_in, N) @ (N, C_out) or
(C_out, N) @ (N, C_in) product. The output layer's gradient does the same
(`minillm_jax.model.losses`).

Measured on a 2-core AVX-512 Xeon, 4 GELU MLP layers of configs/bench_cpu.py's shapes (4,096
tokens, 256 -> 1,024 -> 256), forward and backward: 814-847 ms with autodiff's dots, 455-510 ms
with these (interleaved runs). Values agree to float32 rounding (the summation order of dW).

It costs one activation copy per layer; on GPUs, whose matmul libraries take every operand
layout, the copy and the barrier would only get in the way of fusions, so it is used on CPUs only
(`execution.dense_weight_grad`, resolved by `ExecutionConfig.for_platform`). `jax.custom_vjp` is
the tool because no XLA option picks the operand layout of a gradient dot.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array


@jax.custom_vjp
def dense_matmul(x: Array, kernel: Array) -> Array:
    """x (..., C_in) @ kernel (C_in, C_out), the same product as nn.Dense's."""
    return jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))


def _forward(x: Array, kernel: Array) -> tuple[Array, tuple[Array, Array]]:
    return dense_matmul(x, kernel), (x, kernel)


def _backward(residuals: tuple[Array, Array], grad_y: Array) -> tuple[Array, Array]:
    x, kernel = residuals
    c_in, c_out = kernel.shape
    grad_x = jax.lax.dot_general(grad_y, kernel, (((grad_y.ndim - 1,), (1,)), ((), ())))
    x2, g2 = x.reshape(-1, c_in), grad_y.reshape(-1, c_out)
    barrier = jax.lax.optimization_barrier
    if c_in <= c_out:  # transpose x, the smaller operand: (C_in, N) @ (N, C_out)
        grad_kernel = jnp.dot(barrier(x2.T), g2)
    else:  # transpose dy: (C_out, N) @ (N, C_in), then the small (C_out, C_in) result
        grad_kernel = barrier(jnp.dot(barrier(g2.T), x2)).T
    return grad_x, grad_kernel.astype(kernel.dtype)


dense_matmul.defvjp(_forward, _backward)


def dense_dot_general(lhs: Array, rhs: Array, dimension_numbers: Any, precision: Any = None,
                      preferred_element_type: Any = None) -> Array:
    """A `dot_general` for `nn.Dense(dot_general=...)`: Dense's own product goes through
    `dense_matmul`; any other contraction or precision request is passed on unchanged."""
    (contract_l, contract_r), (batch_l, batch_r) = dimension_numbers
    dense_form = ((lhs.ndim - 1,), (0,), (), ())
    dims = (tuple(contract_l), tuple(contract_r), tuple(batch_l), tuple(batch_r))
    plain = precision is None and preferred_element_type is None
    if dims == dense_form and rhs.ndim == 2 and plain:
        return dense_matmul(lhs, rhs)
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                               preferred_element_type=preferred_element_type)
