"""minillm-jax: compute-budgeted LLM pretraining in JAX/Flax."""

__version__ = "0.1.0"
