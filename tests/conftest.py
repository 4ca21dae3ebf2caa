"""Shared fixtures: tiny configs and a prepared copy of the built-in corpus."""

from __future__ import annotations

import os
from pathlib import Path

# The tests run on the CPU, also where JAX's CUDA plugin is installed (CI installs it for the
# compile-only GPU tests, tests/aot): without this the plugin tries to start a GPU, prints its
# failure and leaves no CUDA client for compiling without one. Subprocesses inherit it.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest

REPO = Path(__file__).resolve().parent.parent


def tiny_config(**overrides):
    """A model small enough to compile and train in seconds on CPU, using the demo data."""
    from minillm_jax.config import load_config

    config = load_config(REPO / "configs" / "demo_2023.py")
    config.update(dict(n_layer=2, n_embd=64, n_head=4, sequence_length=32, batch_size=8,
                       iterations=20, eval_freq=10, eval_batches=2, log_freq=5,
                       sample_tokens=0, final_full_eval=False))
    config.update(overrides)
    return config


@pytest.fixture(scope="session")
def shakespeare_dir(tmp_path_factory) -> str:
    """The built-in corpus prepared once per test session."""
    from minillm_jax.data import ensure_dataset

    out = str(tmp_path_factory.mktemp("data") / "shakespeare")
    ensure_dataset("shakespeare", out)
    return out


class Interrupted(Exception):
    """Stands in for a kill -9 between checkpoints."""


@pytest.fixture
def world(monkeypatch):
    """A fake clock that advances `step_s` seconds per training batch, bad micro-batches (an
    out-of-range token id embeds as NaN: a non-finite loss), and an interruption point."""
    state = {"now": 0.0, "step_s": 1.0, "bad": set(), "die_at": None, "on_micro": {}}
    from minillm_jax.train import trainer
    from minillm_jax.data import loader as loader_lib

    real_next = loader_lib.TrainLoader.__next__

    def fake_next(self):
        micro = self.next_micro_batch
        if micro in state["on_micro"]:
            state["on_micro"].pop(micro)()
        if state["die_at"] is not None and micro >= state["die_at"]:
            raise Interrupted(micro)
        batch = real_next(self)
        state["now"] += state["step_s"]
        if micro in state["bad"]:
            batch = {**batch, "x": batch["x"].copy()}
            batch["x"][:, 0, 0] = 1_000_000
        return batch

    monkeypatch.setattr(loader_lib.TrainLoader, "__next__", fake_next)
    monkeypatch.setattr(trainer, "clock", lambda: state["now"])
    return state
