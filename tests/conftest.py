"""Shared fixtures: tiny configs and a prepared copy of the built-in corpus."""

from __future__ import annotations

import os
from pathlib import Path

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
