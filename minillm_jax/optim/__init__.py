"""Optimizers and learning-rate schedules selected by config fields `opt` and `scheduler`
(minillm_jax/optim/README.md).

Trainer integration:
    tx, schedule = build_optimizer(config)
    lr = current_lr(opt_state, schedule, step)             # for logging, jittable
    opt_state = plateau_observe(config, opt_state, loss)   # after every evaluation
    params_for_eval = eval_params(config, opt_state, params)  # eval / sample / export
"""

from minillm_jax.optim.factory import (OPTIMIZERS, build_optimizer, decay_mask, eval_params,
                                       optimizer_state_bytes)
from minillm_jax.optim.plateau import current_lr, lr_scale, plateau_enabled, plateau_observe
from minillm_jax.optim.schedules import SCHEDULE_NAMES, build_schedule

__all__ = ["OPTIMIZERS", "SCHEDULE_NAMES", "build_optimizer", "build_schedule", "current_lr",
           "decay_mask", "eval_params", "lr_scale", "optimizer_state_bytes", "plateau_enabled",
           "plateau_observe"]
