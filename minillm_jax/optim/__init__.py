"""Optimizers and learning-rate schedules selected by config fields `opt` and `scheduler`."""

from minillm_jax.optim.factory import build_optimizer, decay_mask

__all__ = ["build_optimizer", "decay_mask"]
