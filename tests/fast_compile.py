"""Compile tiny test programs with LLVM optimisations off: about half the CPU compile time, which
dominates these tests (the programs run in milliseconds either way)."""

from __future__ import annotations

from typing import Any, Callable

import jax

FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def fast_jit(fn: Callable, *example_args: Any) -> Callable:
    """jax.jit(fn) compiled for the shapes of example_args with FAST_COMPILE options."""
    return jax.jit(fn).lower(*example_args).compile(compiler_options=FAST_COMPILE)


def fast_init(model: Any, seed: int = 0) -> Any:
    """minillm_jax.model.transformer.init_params, compiled with FAST_COMPILE."""
    import jax.numpy as jnp

    idx = jnp.zeros((1, min(8, model.cfg.sequence_length)), jnp.int32)
    key = jax.random.key(seed)
    return fast_jit(lambda k: model.init({"params": k}, idx, train=False)["params"], key)(key)
