"""Training machinery: the pure step, the one builder, the loop and its helpers, checkpoints, metrics."""
