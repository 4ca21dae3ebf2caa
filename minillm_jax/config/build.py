"""From a flat config (a ConfigDict from a configs/ file with its overrides, or a dict) to the
typed, checked TrainConfig: every bad field reported at once; then the checks that span several
parts or need the device count.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

import ml_collections

from minillm_jax.config.checks import ConfigError, check_schedule, type_error
from minillm_jax.config.files import base_defaults
from minillm_jax.config.schema import PARTS, ModelConfig, TrainConfig


def build_config(source: ml_collections.ConfigDict | Mapping[str, Any] | TrainConfig,
                 name: str = "run") -> TrainConfig:
    """The typed, checked TrainConfig of a flat config (a ConfigDict from a configs/ file with
    its overrides, or a dict). Missing fields take configs/base.py's defaults; an unknown field
    is an error (a typo would otherwise be ignored silently)."""
    if isinstance(source, TrainConfig):
        return source
    flat = source.to_dict() if isinstance(source, ml_collections.ConfigDict) else dict(source)
    defaults = base_defaults()
    unknown = sorted(set(flat) - set(defaults))
    errors = [f"config fields {unknown} are unknown: check their spelling against "
              "configs/base.py"] if unknown else []
    for name_, value in list(flat.items()):
        why = type_error(name_, value, defaults.get(name_)) if name_ in defaults else None
        if why:
            errors.append(why)
            flat[name_] = defaults[name_]  # so that the other fields are still checked
    parts = {}
    for part, cls in PARTS.items():
        parts[part] = _part_collecting(cls, flat, defaults, errors)
    if not errors:
        if not parts["run"].workdir:
            parts["run"] = dataclasses.replace(parts["run"], workdir=os.path.join("runs", name))
        config = TrainConfig(**parts, name=name)
        try:
            _check_across_parts(config)
        except ConfigError as err:
            errors.append(str(err))
        else:
            return config
    if len(errors) == 1:
        raise ConfigError(errors[0])
    raise ConfigError(f"{len(errors)} config values are invalid:\n  " + "\n  ".join(errors))


def _part_collecting(cls: type, flat: dict[str, Any], defaults: Mapping[str, Any],
                     errors: list[str]) -> Any:
    """cls built from `flat`; each field it refuses is reported in `errors` and replaced by its
    configs/base.py default so that the remaining fields are checked too (every bad field is
    reported at once). Returns None if the part cannot be built."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in flat.items() if k in names}
    replaced: set[str] = set()
    for _ in range(len(names) + 1):
        try:
            return cls(**values)
        except ConfigError as err:
            field = err.field
            if field in replaced:
                return None  # the same check fails with the default: another field's fault,
                # already reported (e.g. n_embd not divisible by n_head)
            errors.append(str(err))
            if field not in values or values[field] == defaults.get(field):
                return None  # not one field's fault (or its default fails): no further checks
            values[field] = defaults[field]
            replaced.add(field)
    return None


def _check_across_parts(config: TrainConfig) -> None:
    """Checks that involve fields of several parts."""
    try:
        check_schedule(config.optim, config.run.iterations)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if config.run.budget_minutes > 0 and config.optim.scheduler == "sgdr":
        raise ConfigError("config.scheduler='sgdr' has restarts at fixed steps, which a time "
                          "budget cannot move: use cos, linear or wsd with budget_minutes")
    model, data = config.model, config.data
    if model.has_moe and model.moe_impl_resolved == "einsum" and model.moe_group_size:
        group, seq = model.moe_group_size, model.sequence_length
        for field, rows in (("batch_size", data.batch_size),
                            ("eval_batch_size", data.eval_batch_size)):
            if (rows * seq) % group:
                raise ConfigError(
                    f"config.moe_group_size={group} does not divide the {rows * seq} tokens of a "
                    f"batch ({field} x sequence_length): use a divisor of that (0 = one sequence "
                    "per group)")
        if group < seq and seq % group:
            raise ConfigError(f"config.moe_group_size={group} must divide sequence_length={seq} "
                              "(or be a multiple of it)")


def check_devices(config: TrainConfig, device_count: int) -> tuple[int, int]:
    """(data, fsdp) mesh sizes for `device_count` devices; checks that the batches divide."""
    ex, data = config.execution, config.data
    if device_count % ex.mesh_fsdp:
        raise ConfigError(f"config.mesh_fsdp={ex.mesh_fsdp} must divide the {device_count} "
                          "devices")
    mesh_data = device_count // ex.mesh_fsdp if ex.mesh_data == -1 else ex.mesh_data
    if mesh_data * ex.mesh_fsdp != device_count:
        raise ConfigError(
            f"config.mesh_data={ex.mesh_data} x config.mesh_fsdp={ex.mesh_fsdp} must equal the "
            f"{device_count} devices: set mesh_data=-1 to use all devices")
    parallel = mesh_data * ex.mesh_fsdp
    for field in ("batch_size", "eval_batch_size"):
        rows = getattr(data, field)
        if rows % parallel:
            raise ConfigError(
                f"config.{field}={rows} is not divisible by the {parallel} data-parallel "
                f"devices: use a multiple of {parallel}")
    return mesh_data, ex.mesh_fsdp


def check_sequence_fits(model: ModelConfig, seq_len: int) -> None:
    """Sequences longer than the position table cannot be embedded."""
    if seq_len > model.sequence_length:
        raise ConfigError(
            f"sequence of length {seq_len} is longer than sequence_length="
            f"{model.sequence_length} (config.sequence_length, the position/RoPE table): "
            "shorten the input or raise sequence_length")
