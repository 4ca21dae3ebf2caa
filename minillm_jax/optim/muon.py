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

Three options, each off by default (configs/base.py):

- muon_ns_coefficients="polar_express": Polar Express (Amsel, Persson, Musco, Gower 2025,
  arXiv 2505.16932), one quintic (a, b, c) per Newton-Schulz step, each the optimal odd
  polynomial for the interval of singular values the previous steps leave, instead of Jordan's
  fixed (3.4445, -4.7750, 2.0315). The five rows are modded-nanogpt's (train_gpt.py,
  `polar_express_coeffs`, "computed for num_iters=5, safety_factor=2e-2, cushion=2"), so
  muon_ns_steps must be 5. modded-nanogpt divides the momentum by 1.02 * ||.||_F (a safety factor
  so that rounding cannot push a singular value above 1, where the aggressive first polynomial
  grows fast); here the factor is folded into the first row, (a/s, b/s^3, c/s^5) with s = 1.02,
  which is the same polynomial of the ||.||_F-normalised input that optax computes, so optax's own
  iteration runs it (no hand-written step). For singular values down to 1e-2 of the largest the
  five steps end within [0.85, 1.15] (bf16 matmuls: [0.83, 1.17]), where Jordan's leave
  [0.66, 1.15] (tests/optim/test_muon_v2.py); neither has converged for 1e-3 (0.55 vs 0.29
  at the low end).
- muon_normuon=True: NorMuon (Li et al. 2025, arXiv 2510.05491; modded-nanogpt's NorMuon
  records): after orthogonalisation O, an EMA (NORMUON_BETA2) of each output neuron's mean
  squared update, v <- beta2 v + (1 - beta2) mean_in(O^2) (one value per output unit: the mean
  runs over the reduction axis -2, as in the paper's per-row mean of a torch (out, in) weight;
  modded-nanogpt instead keeps it along the larger dimension), then O / (sqrt(v) + eps) rescaled
  to O's Frobenius norm. No bias correction: it is one factor per matrix, which the rescaling
  cancels. Adds a float32 (..., 1, out) state per Muon kernel.
- cautious_weight_decay=True: Cautious Weight Decay (Chen et al. 2025, arXiv 2510.12402;
  modded-nanogpt applies it to NorMuon and Adam): the decoupled decay only where the update
  direction u and the parameter agree in sign, p <- p - lr (u + wd p 1[u p > 0]), so decay
  never pushes a coordinate against its update. Applied to the Muon group (weight_decay) and the
  AdamW group (adam_weight_decay under adam_mask); the optimizer state is unchanged.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from optax.contrib import MuonDimensionNumbers

BATCHED_MATRIX = MuonDimensionNumbers(reduction_axis=-2, output_axis=-1)
NON_MUON_NAMES = ("lm_head", "wte", "wpe", "router")  # MoE routers: tiny, kept on AdamW

JORDAN_COEFFS = (3.4445, -4.7750, 2.0315)  # optax's default: the same for every step
# modded-nanogpt's Polar Express rows (num_iters=5, safety_factor=2e-2, cushion=2), as published,
# to be applied to X / (POLAR_EXPRESS_SAFETY * ||X||_F).
POLAR_EXPRESS_ROWS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
POLAR_EXPRESS_SAFETY = 1.02


def _fold_safety(rows, s):
    """p(X / s) for the first row's p(X) = aX + bX^3 + cX^5: (a/s, b/s^3, c/s^5)."""
    (a, b, c), *rest = rows
    return ((a / s, b / s**3, c / s**5), *rest)


NS_COEFFICIENTS = {
    "jordan": JORDAN_COEFFS,
    "polar_express": _fold_safety(POLAR_EXPRESS_ROWS, POLAR_EXPRESS_SAFETY),
}
NORMUON_BETA2 = 0.95  # the NorMuon paper's default (modded-nanogpt's record uses 0.9)
NORMUON_EPS = 1e-10


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


def orthogonalize(x: jax.Array, ns_steps: int = 5, ns_coefficients: str = "jordan",
                  ) -> jax.Array:
    """The Newton-Schulz orthogonalisation Muon applies, batched over leading axes (the same optax
    code path with momentum off), with NS_COEFFICIENTS[ns_coefficients]."""
    tx = optax.contrib.scale_by_muon(NS_COEFFICIENTS[ns_coefficients], ns_steps=ns_steps,
                                     beta=0.0, nesterov=False,
                                     weight_dimension_numbers=_dim_numbers)
    out, _ = tx.update(x, tx.init(x))
    return out


def scale_by_muon(momentum: float, ns_steps: int, ns_dtype: str = "float32",
                  ns_coefficients: str = "jordan") -> optax.GradientTransformation:
    """optax.contrib.scale_by_muon (Nesterov momentum, Frobenius normalisation, Newton-Schulz
    with NS_COEFFICIENTS[ns_coefficients]) with the Newton-Schulz matmuls in `ns_dtype`, and
    the same state whatever the dtype.

    optax iterates in the momentum's dtype, and a bfloat16 momentum would lose small gradient
    contributions; so for 16 bits, optax's transform runs without iterations (ns_steps=0:
    momentum and normalisation, in float32) and `orthogonalize` follows on the bfloat16 cast.
    optax keeps the coefficients in its state and, given per-step rows, runs one step per row
    whatever ns_steps says; so that pass sees Jordan's single row (zero steps) while the state
    keeps the real rows, as in float32."""
    coeffs = NS_COEFFICIENTS[ns_coefficients]
    full = optax.contrib.scale_by_muon(coeffs, ns_steps=ns_steps, beta=momentum, nesterov=True,
                                       weight_dimension_numbers=_dim_numbers)
    if ns_dtype == "float32":
        return full
    normalised_momentum = optax.contrib.scale_by_muon(
        JORDAN_COEFFS, ns_steps=0, beta=momentum, nesterov=True,
        weight_dimension_numbers=_dim_numbers)
    low = jnp.dtype(ns_dtype)
    no_steps = jnp.asarray(JORDAN_COEFFS)

    def update_fn(updates, state, params=None):
        updates, new_state = normalised_momentum.update(
            updates, state._replace(ns_coeffs=no_steps), params)
        out = orthogonalize(jax.tree.map(lambda u: u.astype(low), updates), ns_steps,
                            ns_coefficients)
        return (jax.tree.map(lambda o, u: o.astype(u.dtype), out, updates),
                new_state._replace(ns_coeffs=state.ns_coeffs))

    return optax.GradientTransformation(full.init, update_fn)


class NorMuonState(NamedTuple):
    """Per Muon kernel (..., in, out): the EMA of each output neuron's mean squared
    orthogonalised update, float32 (..., 1, out)."""
    nu: Any


def scale_by_normuon(beta2: float = NORMUON_BETA2, eps: float = NORMUON_EPS,
                     ) -> optax.GradientTransformation:
    """NorMuon's neuron-wise normalisation of orthogonalised updates O (module docstring):
    v <- beta2 v + (1 - beta2) mean_{axis -2}(O^2); O / (sqrt(v) + eps), rescaled per matrix
    (the last two axes) to ||O||_F. Computed in float32; returns O's dtype."""
    def init_fn(params):
        return NorMuonState(nu=jax.tree.map(
            lambda p: jnp.zeros((*p.shape[:-2], 1, p.shape[-1]), jnp.float32), params))

    def update_fn(updates, state, params=None):
        del params

        def ema(o, nu):
            return beta2 * nu + (1 - beta2) * jnp.mean(
                jnp.square(o.astype(jnp.float32)), axis=-2, keepdims=True)

        def normalise(o, nu):
            o32 = o.astype(jnp.float32)
            scaled = o32 / (jnp.sqrt(nu) + eps)
            norm = jnp.sqrt(jnp.sum(jnp.square(o32), axis=(-2, -1), keepdims=True))
            new_norm = jnp.sqrt(jnp.sum(jnp.square(scaled), axis=(-2, -1), keepdims=True))
            return (scaled * (norm / (new_norm + eps))).astype(o.dtype)

        nu = jax.tree.map(ema, updates, state.nu)
        return jax.tree.map(normalise, updates, nu), NorMuonState(nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def add_cautious_decayed_weights(weight_decay: float, mask: Any = None,
                                 ) -> optax.GradientTransformation:
    """Cautious Weight Decay (module docstring): u + weight_decay * p where u * p > 0, u
    elsewhere; in place of optax.add_decayed_weights (same empty state, same `mask` handling).
    With weight_decay=0 the updates pass through untouched, as in optax."""
    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("add_cautious_decayed_weights needs params")
        if weight_decay == 0:
            return updates, state
        return jax.tree.map(
            lambda u, p: jnp.where(u * p > 0, u + weight_decay * p, u), updates, params), state

    tx = optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)
    return optax.masked(tx, mask) if mask is not None else tx


def adamw(learning_rate: optax.ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
          eps: float = 1e-8, weight_decay: float = 1e-4, mask: Any = None,
          cautious_weight_decay: bool = False) -> optax.GradientTransformation:
    """optax.adamw, or with cautious_weight_decay the same chain (scale_by_adam, decay,
    scale_by_learning_rate) with add_cautious_decayed_weights: the same state structure."""
    if not cautious_weight_decay:
        return optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                           mask=mask)
    return optax.chain(optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
                       add_cautious_decayed_weights(weight_decay, mask),
                       optax.scale_by_learning_rate(learning_rate))


def muon(learning_rate: optax.ScalarOrSchedule, adam_learning_rate: optax.ScalarOrSchedule,
         momentum: float = 0.95, ns_steps: int = 5, weight_decay: float = 0.0,
         adam_b1: float = 0.9, adam_b2: float = 0.95, adam_eps: float = 1e-8,
         adam_weight_decay: float = 0.0, adam_mask: Any = None, ns_dtype: str = "float32",
         ns_coefficients: str = "jordan", normuon: bool = False,
         cautious_weight_decay: bool = False) -> optax.GradientTransformation:
    """Muon on muon_labels(params) == 'muon' (decoupled weight decay `weight_decay`, multiplied
    by the Muon lr as in optax; Newton-Schulz matmuls in `ns_dtype` with
    NS_COEFFICIENTS[ns_coefficients]; NorMuon's normalisation if `normuon`), AdamW with
    `adam_mask` on the rest; both decays cautious if `cautious_weight_decay`."""
    decay = (add_cautious_decayed_weights(weight_decay) if cautious_weight_decay
             else optax.add_decayed_weights(weight_decay))
    return optax.partition(
        {
            "muon": optax.chain(
                scale_by_muon(momentum, ns_steps, ns_dtype, ns_coefficients),
                *([scale_by_normuon()] if normuon else []),
                scale_by_width(),
                decay,
                optax.scale_by_learning_rate(learning_rate),
            ),
            "adam": adamw(adam_learning_rate, b1=adam_b1, b2=adam_b2, eps=adam_eps,
                          weight_decay=adam_weight_decay, mask=adam_mask,
                          cautious_weight_decay=cautious_weight_decay),
        },
        muon_labels,
    )
