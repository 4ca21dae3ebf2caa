"""Optimizers and learning-rate schedules selected by the OptimConfig fields `opt` and `scheduler`
(minillm_jax/optim/README.md).

Trainer integration:
    tx, schedule = build_optimizer(optim_config, iterations)
    lr = current_lr(opt_state, schedule, step)                   # for logging, jittable
    opt_state = plateau_observe(optim_config, opt_state, loss)   # after every evaluation
    params_for_eval = eval_params(opt_state, params)             # eval / sample / export
"""

from minillm_jax.optim.factory import (OPTIMIZERS, build_optimizer, decay_mask, eval_params,
                                       optimizer_state_bytes)
from minillm_jax.optim.plateau import current_lr, lr_scale, plateau_observe
from minillm_jax.optim.schedules import build_schedule

__all__ = ["OPTIMIZERS", "build_optimizer", "build_schedule", "current_lr", "decay_mask",
           "eval_params", "lr_scale", "optimizer_state_bytes", "plateau_observe"]
