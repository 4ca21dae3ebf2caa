"""Format-independent entry points: our params <-> {torch key: numpy array} for a format."""

from __future__ import annotations

from typing import Any, Mapping

import jax
import ml_collections
import numpy as np

from minillm_jax.export import architectures
from minillm_jax.export.architectures import param_shapes
from minillm_jax.export.errors import ConversionError
from minillm_jax.export.mapping import (
    check_rules_cover, check_tree, expected_torch_shapes, flatten, from_state_dict, to_numpy,
    to_state_dict, unflatten)
from minillm_jax.config import MODEL_ALIASES, TrainConfig
from minillm_jax.model.transformer import ModelConfig


def model_config(config: ml_collections.ConfigDict | Mapping[str, Any] | TrainConfig | ModelConfig,
                 ) -> ModelConfig:
    """The architecture of a run config (or a ModelConfig, returned as is)."""
    if isinstance(config, ModelConfig):
        return config
    if isinstance(config, TrainConfig):
        return config.model
    flat = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
    if "model" in flat and flat["model"] not in MODEL_ALIASES:
        raise ConversionError(f"unknown architecture {flat['model']!r}: the converter knows "
                              f"{sorted(MODEL_ALIASES)}")
    try:
        return ModelConfig.from_flat(flat)
    except (TypeError, ValueError) as err:
        raise ConversionError(f"cannot read the model fields of the config: {err}") from err


def describe(cfg: ModelConfig, fmt: str) -> str:
    entry = architectures.lookup(cfg, fmt)
    return (f"{entry.name} (n_layer={cfg.n_layer}, n_embd={cfg.n_embd}, n_head={cfg.n_head}, "
            f"vocab_size={cfg.vocab_size}, sequence_length={cfg.sequence_length}, bias={cfg.bias}, "
            f"tie_embeddings={cfg.tie_embeddings})")


def _rules(cfg: ModelConfig, fmt: str, exporting: bool = True):
    entry = architectures.lookup(cfg, fmt)  # unknown format/architecture -> ConversionError
    notes = entry.check(cfg, exporting)
    shapes = param_shapes(cfg)
    rules = entry.rules(cfg)
    check_rules_cover(rules, shapes, describe(cfg, fmt))
    return rules, shapes, notes


def export_arrays(params: Mapping[str, Any], config: ml_collections.ConfigDict | ModelConfig,
                  fmt: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """Our params (or a gradient tree of the same structure) -> ({torch key: float32 array}, notes).

    Raises ConversionError when the architecture is unknown, the tree does not match the config,
    or the format cannot express the model exactly.
    """
    cfg = model_config(config)
    rules, shapes, notes = _rules(cfg, fmt)
    flat = {k: to_numpy(v) for k, v in flatten(jax.device_get(dict(params))).items()}
    check_tree(flat, shapes, f"the config's model ({describe(cfg, fmt)})")
    return to_state_dict(flat, rules, cfg.n_layer), notes


def import_arrays(state_dict: Mapping[str, Any], config: ml_collections.ConfigDict | ModelConfig,
                  fmt: str) -> dict:
    """{torch key: tensor or array} -> our float32 params tree (nested dict of numpy arrays).

    Raises one ConversionError listing every missing, unexpected or mis-shaped key."""
    cfg = model_config(config)
    rules, shapes, _ = _rules(cfg, fmt, exporting=False)
    return unflatten(from_state_dict(state_dict, rules, shapes, cfg.n_layer, describe(cfg, fmt)))


def expected_keys(config: ml_collections.ConfigDict | ModelConfig, fmt: str,
                  ) -> dict[str, tuple[int, ...]]:
    """Torch key -> shape that `export_arrays` writes (and `import_arrays` reads) for a config."""
    cfg = model_config(config)
    rules, shapes, _ = _rules(cfg, fmt, exporting=False)
    return expected_torch_shapes(rules, shapes, cfg.n_layer)


def synthetic_keys(config: ml_collections.ConfigDict | ModelConfig, fmt: str) -> set[str]:
    """Torch keys written as constants because our model has no such parameter (GPT-2 zero
    biases when bias=False)."""
    cfg = model_config(config)
    rules, _, _ = _rules(cfg, fmt, exporting=False)
    return {name for r in rules if r.ours is None
            for i in (range(cfg.n_layer) if r.layered else [None]) for name in r.names(i)}
