"""Muon (momentum orthogonalised by Newton-Schulz) for hidden matrices, AdamW for the rest.

As in modded-nanogpt: every Dense kernel inside the transformer blocks is updated by Muon
(optax.contrib.scale_by_muon: Nesterov momentum, quintic Newton-Schulz with coefficients
(3.4445, -4.7750, 2.0315), Frobenius pre-scaling), scaled by sqrt(max(1, fan_out/fan_in)) (Keller
Jordan's width rule). Kernels stacked over layers, shape (n_layer, in, out) (scan_layers=True), are
orthogonalised per layer: every axis before the last two is a batch axis
(MuonDimensionNumbers(reduction_axis=-2, output_axis=-1)); MoE experts (L, E, in, out) likewise.
Embeddings (wte, wpe), an untied lm_head, MoE routers, norms and biases go to AdamW with
llm-baselines' decay mask. With a bfloat16 compute dtype the Newton-Schulz matmuls run in bfloat16
on the Frobenius-normalised float32 momentum, as in modded-nanogpt (the iteration only has to
bring the singular values into about [0.7, 1.2], which it still does); the momentum stays float32.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from optax.contrib import MuonDimensionNumbers

BATCHED_MATRIX = MuonDimensionNumbers(reduction_axis=-2, output_axis=-1)
NON_MUON_NAMES = ("lm_head", "wte", "wpe", "router")  # MoE routers: tiny, kept on AdamW


def _key(entry) -> str:
    return str(getattr(entry, "key", getattr(entry, "name", entry)))


def muon_labels(params: Any) -> Any:
    """'muon' for hidden Dense kernels (ndim >= 2, not head/embeddings/routers), else 'adam'."""
    def label(path, x):
        keys = [_key(k) for k in path]
        hidden_kernel = (keys and keys[-1] == "kernel" and x.ndim >= 2
                         and not any(k in NON_MUON_NAMES for k in keys))
        return "muon" if hidden_kernel else "adam"
    return jax.tree_util.tree_map_with_path(label, params)


def _dim_numbers(updates: Any) -> Any:
    # Under optax.partition the Adam leaves are MaskedNodes (empty subtrees), kept as they are.
    return jax.tree.map(lambda _: BATCHED_MATRIX, updates)


def scale_by_width() -> optax.GradientTransformation:
    """updates * sqrt(max(1, fan_out / fan_in)) with (fan_in, fan_out) the last two axes."""
    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(
            lambda u: u * jnp.sqrt(max(1.0, u.shape[-1] / u.shape[-2])).astype(u.dtype),
            updates), state
    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def orthogonalize(x: jax.Array, ns_steps: int = 5) -> jax.Array:
    """The Newton-Schulz orthogonalisation Muon applies, batched over leading axes (the same optax
    code path with momentum off)."""
    tx = optax.contrib.scale_by_muon(ns_steps=ns_steps, beta=0.0, nesterov=False,
                                     weight_dimension_numbers=_dim_numbers)
    out, _ = tx.update(x, tx.init(x))
    return out


def scale_by_muon(momentum: float, ns_steps: int, ns_dtype: str = "float32",
                  ) -> optax.GradientTransformation:
    """optax.contrib.scale_by_muon (Nesterov momentum, Frobenius normalisation, Newton-Schulz)
    with the Newton-Schulz matmuls in `ns_dtype`, and the same state whatever the dtype.

    optax iterates in the momentum's dtype, and a bfloat16 momentum would lose small gradient
    contributions; so for 16 bits, optax's transform runs without iterations (ns_steps=0:
    momentum and normalisation, in float32) and `orthogonalize` follows on the bfloat16 cast."""
    if ns_dtype == "float32":
        return optax.contrib.scale_by_muon(ns_steps=ns_steps, beta=momentum, nesterov=True,
                                           weight_dimension_numbers=_dim_numbers)
    normalised_momentum = optax.contrib.scale_by_muon(
        ns_steps=0, beta=momentum, nesterov=True, weight_dimension_numbers=_dim_numbers)
    low = jnp.dtype(ns_dtype)

    def update_fn(updates, state, params=None):
        updates, state = normalised_momentum.update(updates, state, params)
        out = orthogonalize(jax.tree.map(lambda u: u.astype(low), updates), ns_steps)
        return jax.tree.map(lambda o, u: o.astype(u.dtype), out, updates), state

    return optax.GradientTransformation(normalised_momentum.init, update_fn)


def muon(learning_rate: optax.ScalarOrSchedule, adam_learning_rate: optax.ScalarOrSchedule,
         momentum: float = 0.95, ns_steps: int = 5, weight_decay: float = 0.0,
         adam_b1: float = 0.9, adam_b2: float = 0.95, adam_eps: float = 1e-8,
         adam_weight_decay: float = 0.0, adam_mask: Any = None, ns_dtype: str = "float32",
         ) -> optax.GradientTransformation:
    """Muon on muon_labels(params) == 'muon' (decoupled weight decay `weight_decay`, multiplied
    by the Muon lr as in optax; Newton-Schulz matmuls in `ns_dtype`), AdamW with `adam_mask` on
    the rest."""
    return optax.partition(
        {
            "muon": optax.chain(
                scale_by_muon(momentum, ns_steps, ns_dtype),
                scale_by_width(),
                optax.add_decayed_weights(weight_decay),
                optax.scale_by_learning_rate(learning_rate),
            ),
            "adam": optax.adamw(adam_learning_rate, b1=adam_b1, b2=adam_b2, eps=adam_eps,
                                weight_decay=adam_weight_decay, mask=adam_mask),
        },
        muon_labels,
    )
