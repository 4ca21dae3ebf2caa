"""The optimizer named by config.opt, with llm-baselines' weight-decay groups (REFERENCE §5)."""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import optax

from minillm_jax.optim.schedules import build_schedule


def decay_mask(params: Any) -> Any:
    """True for Dense kernels (decayed); False for embeddings, norms and biases.

    The tied embedding/unembedding is an embedding, so it is not decayed, as in llm-baselines.
    """
    def is_kernel(path, _):
        return getattr(path[-1], "key", None) == "kernel"
    return jax.tree_util.tree_map_with_path(is_kernel, params)


def build_optimizer(config: ml_collections.ConfigDict,
                    ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Returns (optimizer, lr schedule); clipping by global norm first when grad_clip > 0."""
    schedule = build_schedule(config)
    if config.opt == "adamw":
        tx = optax.adamw(schedule, b1=config.beta1, b2=config.beta2, eps=config.eps,
                         weight_decay=config.weight_decay, mask=decay_mask)
    elif config.opt == "sgd":
        tx = optax.chain(optax.add_decayed_weights(config.weight_decay, mask=decay_mask),
                         optax.sgd(schedule, momentum=0.9))
    else:
        raise ValueError(f"config.opt={config.opt!r} is unknown: use adamw or sgd")
    if config.grad_clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(config.grad_clip), tx)
    return tx, schedule
