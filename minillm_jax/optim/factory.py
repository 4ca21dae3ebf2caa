"""The optimizer named by OptimConfig.opt, with llm-baselines' weight-decay groups
(docs/llm-baselines.md#optimizer-groups-and-the-training-step).

Every optimizer is `chain(clip_by_global_norm(grad_clip) if grad_clip > 0, <opt>, <plateau scale>
if plateau)`; weight decay is decoupled and applied with `decay_mask` (Dense kernels only).
See minillm_jax/optim/README.md for what each option is for.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from minillm_jax.config import OPTIMIZERS, ConfigError, OptimConfig
from minillm_jax.optim.adam8bit import adamw_8bit, tree_bytes
from minillm_jax.optim.muon import adamw, muon
from minillm_jax.optim.plateau import plateau_from_config
from minillm_jax.optim.schedules import build_schedule

__all__ = ["OPTIMIZERS", "build_optimizer", "decay_mask", "eval_params", "matrix_mask",
           "optimizer_state_bytes"]


def decay_mask(params: Any) -> Any:
    """True for Dense kernels (decayed); False for embeddings, norms and biases.

    The tied embedding/unembedding is an embedding, so it is not decayed, as in llm-baselines.
    """
    def is_kernel(path, _):
        return getattr(path[-1], "key", None) == "kernel"
    return jax.tree_util.tree_map_with_path(is_kernel, params)


def matrix_mask(params: Any) -> Any:
    """True for Dense kernels and embeddings (the tensors adamw8bit quantises)."""
    def is_matrix(path, _):
        return getattr(path[-1], "key", None) in ("kernel", "embedding")
    return jax.tree_util.tree_map_with_path(is_matrix, params)


def _base_optimizer(config: OptimConfig, schedule: optax.Schedule,
                    tail: list[optax.GradientTransformation], matmul_dtype: str,
                    ) -> optax.GradientTransformation:
    """config.opt without clipping; `tail` (the plateau scale) is applied to its lr-scaled
    updates (inside schedule-free's base optimizer for sfadamw). `matmul_dtype`: Muon's
    Newton-Schulz iterations."""
    opt, wd = config.opt, config.weight_decay
    if opt == "adamw":
        tx = adamw(schedule, b1=config.beta1, b2=config.beta2, eps=config.eps,
                   weight_decay=wd, mask=decay_mask,
                   cautious_weight_decay=config.cautious_weight_decay)
    elif opt == "sgd":
        tx = optax.chain(optax.add_decayed_weights(wd, mask=decay_mask),
                         optax.sgd(schedule, momentum=0.9))
    elif opt == "adamw8bit":
        tx = adamw_8bit(schedule, b1=config.beta1, b2=config.beta2, eps=config.eps,
                        weight_decay=wd, mask=decay_mask,
                        block_size=config.adam8bit_block_size,
                        min_size=config.adam8bit_min_size,
                        stochastic_round=config.adam8bit_stochastic_round,
                        quantize=matrix_mask)
    elif opt == "lion":
        tx = optax.lion(schedule, b1=config.beta1, b2=config.lion_beta2,
                        weight_decay=wd, mask=decay_mask)
    elif opt == "muon":
        ratio = config.muon_lr / config.lr if config.lr else 0.0
        tx = muon(lambda step: schedule(step) * ratio, schedule,
                  momentum=config.muon_momentum,
                  ns_steps=config.muon_ns_steps,
                  weight_decay=config.muon_weight_decay,
                  adam_b1=config.beta1, adam_b2=config.beta2, adam_eps=config.eps,
                  adam_weight_decay=wd, adam_mask=decay_mask, ns_dtype=matmul_dtype,
                  ns_coefficients=config.muon_ns_coefficients, normuon=config.muon_normuon,
                  cautious_weight_decay=config.cautious_weight_decay)
    elif opt == "sfadamw":
        # optax.contrib.schedule_free_adamw without its built-in warm-up and with the decay mask:
        # Adam without momentum (the averaging replaces it) inside schedule_free. schedule_free
        # evaluates its lr (only used to weight the average) at step_count = step + 1.
        base = optax.chain(
            optax.scale_by_rms(decay=config.beta2, eps=config.eps, eps_in_sqrt=False,
                               bias_correction=True),
            optax.add_decayed_weights(wd, mask=decay_mask),
            optax.scale_by_learning_rate(schedule),
            *tail)
        return optax.contrib.schedule_free(base, lambda count: schedule(count - 1),
                                           b1=config.beta1)
    else:
        raise ConfigError(f"config.opt={opt!r} is unknown: use one of {OPTIMIZERS}")
    return optax.chain(tx, *tail)


def build_optimizer(config: OptimConfig, iterations: Any, step: Any = None,
                    matmul_dtype: str = "float32",
                    ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Returns (optimizer, base lr schedule) for a run of `iterations` steps (the schedule's
    horizon: a number, or a traced scalar inside the train step); clipping by global norm first
    when grad_clip > 0. The optimizer state's structure depends on neither the horizon nor
    `matmul_dtype` (the run's compute dtype: the dtype of Muon's Newton-Schulz matmuls).

    `step` (the train state's step, traced inside the train step) is the one source of truth
    for the schedule: the optimizer applies schedule(step) instead of schedule(its own update
    count). The two are equal until a step is skipped (a non-finite loss keeps the optimizer
    state, counts included, while the run's step advances) or a params-only checkpoint resumes
    with a fresh optimizer state at step k; with `step` the lr applied is the one logged and
    the decay ends at the horizon. Bias corrections and schedule-free's averaging weights keep
    counting the updates actually applied. Without `step` (state initialisation, sizing) the
    optimizer's own count drives the schedule.

    With a plateau scale the lr applied is schedule(step) * lr_scale(opt_state): log
    minillm_jax.optim.current_lr(opt_state, schedule, step).
    """
    try:
        schedule = build_schedule(config, iterations)
        applied = schedule if step is None else (lambda _count: schedule(step))
        tail = [plateau_from_config(config)] if config.uses_plateau else []
        tx = _base_optimizer(config, applied, tail, matmul_dtype)
    except ConfigError:
        raise
    except ValueError as e:  # a schedule that cannot fit this horizon, with its own message
        raise ConfigError(str(e)) from e
    if config.grad_clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(config.grad_clip), tx)
    return tx, schedule


def _is_schedule_free(x) -> bool:
    return isinstance(x, optax.contrib.ScheduleFreeState)


def eval_params(opt_state: Any, params: Any) -> Any:
    """The parameters to evaluate, sample from and export: schedule-free's averaged x sequence
    (optax.contrib.schedule_free_eval_params) for opt=sfadamw, `params` itself otherwise or when
    there is no optimizer state. Jittable. Training and resuming keep using `params` (y) and
    opt_state (which holds z)."""
    if opt_state is None:
        return params
    nodes = [s for s in jax.tree.leaves(opt_state, is_leaf=_is_schedule_free)
             if _is_schedule_free(s)]
    if not nodes:
        return params
    return optax.contrib.schedule_free_eval_params(nodes[0], params)


def optimizer_state_bytes(config: OptimConfig, params: Any, iterations: int = 1) -> int:
    """Bytes of the optimizer state for `params` (arrays or ShapeDtypeStructs), not allocated."""
    tx, _ = build_optimizer(config, iterations)
    return tree_bytes(jax.eval_shape(tx.init, params))
