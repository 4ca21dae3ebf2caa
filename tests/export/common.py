"""Shared helpers of the export tests: tiny configs, random weights, JAX loss/logits/grads."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from minillm_jax.model.transformer import ModelConfig, Transformer, abstract_params
from minillm_jax.export.mapping import flatten, unflatten

TINY = dict(n_layer=2, n_embd=64, n_head=4, vocab_size=512, sequence_length=32)
BATCH = 3
MEASURED: dict[str, dict[str, float]] = {}  # filled by the parity tests, printed at the end


def tiny_config(model: str = "gpt", bias: bool = False, tied: bool = True,
                **overrides) -> ml_collections.ConfigDict:
    """A full run config (configs/base.py) with a tiny architecture."""
    from minillm_jax.config import load_config
    from tests.conftest import REPO

    config = load_config(REPO / "configs" / "base.py")
    config.update(dict(TINY, model=model, bias=bias, tie_embeddings=tied, **overrides))
    return config


def modern_options() -> dict:
    """The model options of the modern recipe (configs/recipes/modern.py)."""
    from minillm_jax.config import exec_python_file
    from tests.conftest import REPO

    options = exec_python_file(REPO / "configs" / "recipes" / "modern.py", "config").OPTIONS
    return {k: v for k, v in options.items() if k in ModelConfig.__dataclass_fields__}


MODERN = modern_options()


def random_params(config, seed: int = 0) -> dict:
    """Random weights, far from the init: every leaf is noise (norm scales 1 + noise, biases
    noise), so a swapped or untransposed tensor cannot go unnoticed."""
    cfg = ModelConfig.from_flat(config.to_dict())
    rng = np.random.default_rng(seed)
    flat = {}
    for path, spec in sorted(flatten(abstract_params(Transformer(cfg))).items()):
        noise = rng.standard_normal(spec.shape).astype(np.float32)
        if path.endswith("scale"):
            flat[path] = 1.0 + 0.2 * noise
        elif path.endswith("bias"):
            flat[path] = 0.1 * noise
        else:
            flat[path] = 0.08 * noise
    return unflatten(flat)


def batch(config, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, config.vocab_size, (BATCH, config.sequence_length + 1))
    return tokens[:, :-1].astype(np.int64), tokens[:, 1:].astype(np.int64)


def rel_err(got, want) -> float:
    """max |got - want| / max |want|."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


@functools.lru_cache(maxsize=None)
def jax_results(model: str, bias: bool, tied: bool):
    """(config, params, idx, targets, logits, loss, grads) of one fp32 training-step loss."""
    from minillm_jax.model.losses import cross_entropy

    config = tiny_config(model, bias, tied)
    params = random_params(config)
    idx, targets = batch(config)
    net = Transformer(ModelConfig.from_flat(config.to_dict()))

    def loss_fn(p):
        logits = net.apply({"params": p}, jnp.asarray(idx, jnp.int32), train=False)
        return cross_entropy(logits, jnp.asarray(targets, jnp.int32)).mean(), logits

    (loss, logits), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
    grads = jax.tree.map(np.asarray, grads)
    return config, params, idx, targets, np.asarray(logits), float(loss), grads


def record(name: str, **errors: float) -> None:
    MEASURED[name] = errors
