"""Shared helpers of the export tests: tiny configs, random weights, JAX loss/logits/grads."""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Callable, Iterator

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


@contextlib.contextmanager
def pinned_torch(threads: int = 1) -> Iterator[None]:
    """PyTorch with a fixed intra-op thread count and deterministic algorithms, restored after.

    The export comparisons measured bit-identical torch logits for 1 to 16 threads (and under
    CPU load): the pin does not change today's numbers. It keeps them independent of the
    machine's core count and of what an earlier test left set, so that a comparison that fails
    once cannot be put down to either."""
    import torch

    old_threads, old_deterministic = (torch.get_num_threads(),
                                      torch.are_deterministic_algorithms_enabled())
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_deterministic)


def logits_mismatch(got: np.ndarray, want: np.ndarray, torch_logits: Callable[[], np.ndarray],
                    jax_logits: Callable[[], np.ndarray],
                    float64_logits: Callable[[], np.ndarray] | None = None) -> str:
    """Why torch's logits `got` differ from JAX's `want`: the worst entry (row, position,
    token) and its values, whether each side gives the same bits when evaluated again (a
    nondeterministic side) and, with float64_logits (the torch model in float64; its norms
    compute in float32), which side is off. Evaluated only when a comparison fails, so that a
    single failure in CI says what happened."""
    import jax
    import torch

    got, want = np.asarray(got), np.asarray(want)
    worst = np.unravel_index(np.argmax(np.abs(got.astype(np.float64) - want)), want.shape)
    lines = [f"logits rel err {rel_err(got, want):.3e} (max |want| {np.max(np.abs(want)):.4g}); "
             f"worst at (row, position, token) {tuple(int(i) for i in worst)}: torch "
             f"{float(got[worst]):.8g}, jax {float(want[worst]):.8g}",
             "per row: " + ", ".join(f"{e:.2e}" for e in np.max(np.abs(
                 got.astype(np.float64) - want).reshape(len(want), -1), axis=1)
                 / np.max(np.abs(want)))]
    again_torch, again_jax = torch_logits(), jax_logits()
    lines.append(f"torch again: {'same bits' if np.array_equal(again_torch, got) else 'DIFFERENT'}"
                 f" ({rel_err(again_torch, want):.3e}); jax again: "
                 f"{'same bits' if np.array_equal(again_jax, want) else 'DIFFERENT'} "
                 f"({rel_err(got, again_jax):.3e})")
    if float64_logits is not None:
        exact = float64_logits()
        lines.append(f"vs float64: torch {rel_err(got, exact):.3e}, jax {rel_err(want, exact):.3e}")
    lines.append(f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}, "
                 f"{torch.get_num_threads()} threads unpinned), jax {jax.__version__} "
                 f"({jax.default_backend()}), {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    return "\n".join(lines)
