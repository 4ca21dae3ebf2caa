"""Loading and checking run configurations (ml_collections files under configs/)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import ml_collections

MODEL_ALIASES = {"gpt": "gpt", "base": "gpt", "llama": "llama", "llama2": "llama"}
SCHEDULERS = ("cos", "linear", "constant", "none")
REMAT_POLICIES = ("none", "full", "save_dots")
COMPUTE_DTYPES = ("float32", "bfloat16")


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the field and the fix."""


def load_config(path: str | os.PathLike) -> ml_collections.ConfigDict:
    """Executes a config file and returns its `get_config()`.

    Config files use this to derive from a sibling (`load_config(Path(__file__).with_name("base.py"))`)
    without needing configs/ on sys.path.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    return exec_python_file(path, "config").get_config()


def exec_python_file(path: Path, kind: str) -> Any:
    """Imports a config or sweep file by path, as a module of its own."""
    spec = importlib.util.spec_from_file_location(f"_minillm_{kind}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def attention_dropout(config: ml_collections.ConfigDict) -> float:
    """Attention-probability dropout rate: `attention_dropout`, or `dropout` when it is negative."""
    rate = config.get("attention_dropout", -1.0)
    return float(config.dropout if rate is None or rate < 0 else rate)


def resolve(config: ml_collections.ConfigDict, name: str = "run") -> ml_collections.ConfigDict:
    """Fills derived defaults (aliases, data and work directories) in a copy of `config`."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.model = MODEL_ALIASES.get(str(config.model), str(config.model))
    if config.scheduler == "none":
        config.scheduler = "constant"
    if not config.data_dir:
        config.data_dir = os.path.join("data", config.dataset)
    if not config.workdir:
        config.workdir = os.path.join("runs", name)
    if not config.eval_batch_size:
        config.eval_batch_size = config.batch_size
    return config


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks the fields that would otherwise fail deep inside JAX, with one clear message each."""
    if config.model not in MODEL_ALIASES.values():
        raise ConfigError(
            f"config.model={config.model!r} is unknown: use one of {sorted(MODEL_ALIASES)}")
    for field in ("n_layer", "n_embd", "n_head", "vocab_size", "sequence_length", "batch_size",
                  "acc_steps", "iterations"):
        if int(config[field]) <= 0:
            raise ConfigError(f"config.{field}={config[field]} must be a positive integer")
    if config.n_embd % config.n_head:
        raise ConfigError(
            f"config.n_embd={config.n_embd} is not divisible by config.n_head={config.n_head}: "
            "choose n_head dividing n_embd (e.g. n_embd=64*n_head)")
    if config.model == "llama" and (config.n_embd // config.n_head) % 2:
        raise ConfigError(
            f"head size n_embd/n_head={config.n_embd // config.n_head} must be even for RoPE")
    if not 0.0 <= config.dropout < 1.0:
        raise ConfigError(f"config.dropout={config.dropout} must be in [0, 1)")
    if config.scheduler not in SCHEDULERS and config.scheduler not in _extra_schedulers():
        raise ConfigError(f"config.scheduler={config.scheduler!r} is unknown: use one of "
                          f"{list(SCHEDULERS) + list(_extra_schedulers())}")
    if not 0.0 <= config.warmup_percent < 1.0:
        raise ConfigError(f"config.warmup_percent={config.warmup_percent} must be in [0, 1)")
    if config.remat not in REMAT_POLICIES:
        raise ConfigError(f"config.remat={config.remat!r} is unknown: use one of {REMAT_POLICIES}")
    if config.compute_dtype not in COMPUTE_DTYPES:
        raise ConfigError(
            f"config.compute_dtype={config.compute_dtype!r} is unknown: use one of {COMPUTE_DTYPES}")
    if config.attention_impl not in ("", "xla", "cudnn"):
        raise ConfigError(
            f"config.attention_impl={config.attention_impl!r} is unknown: use '', 'xla' or 'cudnn'")
    if config.eval_freq <= 0 or config.log_freq <= 0:
        raise ConfigError("config.eval_freq and config.log_freq must be positive")


def _extra_schedulers() -> tuple[str, ...]:
    """Schedulers registered by minillm_jax.optim beyond the llm-baselines three."""
    from minillm_jax.optim import schedules

    return tuple(schedules.SCHEDULE_NAMES)


def check_sequence_fits(config: ml_collections.ConfigDict, seq_len: int) -> None:
    """Sequences longer than the position table cannot be embedded."""
    if seq_len > config.sequence_length:
        raise ConfigError(
            f"sequence of length {seq_len} is longer than config.sequence_length="
            f"{config.sequence_length} (the position/RoPE table): shorten the input or raise "
            "sequence_length")
