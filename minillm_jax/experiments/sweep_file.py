"""Sweep files: loading and checking `get_sweep()`, and the config of each variant and seed.

A sweep file's format and the seed layout are described in `minillm_jax.sweep`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Sequence

import ml_collections

SEED_FIELDS = ("seed", "data_seed")  # what --seeds sets: a variant may not set them itself
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]*")


class SweepError(ValueError):
    """A sweep file or option that cannot work; the message says what to change."""


def load_sweep(path: str | os.PathLike) -> dict[str, Any]:
    """Executes a sweep file and returns its checked `get_sweep()`."""
    from minillm_jax.config import exec_python_file

    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep file {str(path)!r} does not exist")
    module = exec_python_file(path, "sweep")
    if not hasattr(module, "get_sweep"):
        raise SweepError(f"{path} defines no get_sweep() returning {{'base': ..., 'variants': ...}}")
    return check_sweep(module.get_sweep(), str(path))


def check_sweep(sweep: dict[str, Any], source: str = "sweep") -> dict[str, Any]:
    if not isinstance(sweep, dict) or "base" not in sweep or "variants" not in sweep:
        raise SweepError(f"{source}: get_sweep() must return {{'base': ConfigDict, "
                         "'variants': [{'name': ..., field: value, ...}, ...]}")
    base = sweep["base"]
    if not isinstance(base, ml_collections.ConfigDict):
        raise SweepError(f"{source}: 'base' must be an ml_collections.ConfigDict, "
                         f"not {type(base).__name__}")
    variants = list(sweep["variants"])
    if not variants:
        raise SweepError(f"{source}: 'variants' is empty")
    seen: set[str] = set()
    for i, variant in enumerate(variants):
        if not isinstance(variant, dict) or not isinstance(variant.get("name"), str):
            raise SweepError(f"{source}: variant #{i} needs a string 'name'")
        name = variant["name"]
        if not _NAME_RE.fullmatch(name):
            raise SweepError(f"{source}: variant name {name!r} must be usable as a directory name "
                             "(letters, digits, . _ - + =)")
        if name in seen:
            raise SweepError(f"{source}: variant name {name!r} appears twice; names must be "
                             "unique (each is a workdir)")
        seen.add(name)
        unknown = [k for k in variant if k != "name" and k not in base]
        if unknown:
            raise SweepError(f"{source}: variant {name!r} sets {unknown}, which the base config "
                             "does not have (check the spelling against configs/base.py)")
    if sweep.get("seeds") is not None:
        check_seeds(sweep["seeds"], f"{source}: 'seeds'")
    if sweep.get("baseline") is not None:
        check_baseline(sweep["baseline"], [v["name"] for v in variants], f"{source}: 'baseline'")
    return {**sweep, "base": base, "variants": variants}


def check_seeds(seeds: Any, where: str) -> int:
    """The number of seeds per variant: a positive int (1 gives the seed<k> layout, no CIs)."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise SweepError(f"{where} must be a whole number >= 1 (seeds per variant), not {seeds!r}")
    return seeds


def check_baseline(baseline: Any, names: Sequence[str], where: str) -> str:
    """The baseline must be one of the variants: the ablation table pairs every seed with it."""
    if baseline not in names:
        raise SweepError(f"{where} {baseline!r} is not a variant of the sweep; its variants are "
                         f"{list(names)}")
    return baseline


def resolve_seeds(sweep: dict[str, Any], seeds: int | None) -> int | None:
    """Seeds per variant: the --seeds value, else the sweep's "seeds", else None (one run each,
    in the single-seed layout <out>/<variant>)."""
    if seeds is not None:
        return check_seeds(seeds, "--seeds")
    return sweep.get("seeds")  # the sweep dict (not a run config); checked by check_sweep


def resolve_baseline(sweep: dict[str, Any], baseline: str | None) -> str:
    """The variant the ablation compares against: --baseline, else "baseline", else the first."""
    names = [v["name"] for v in sweep["variants"]]
    if baseline is not None:
        return check_baseline(baseline, names, "--baseline")
    return sweep.get("baseline") or names[0]


def resolve_ablation(sweep: dict[str, Any], seeds: int | None,
                     baseline: str | None) -> tuple[int | None, str | None]:
    """(seeds, baseline) of a multi-seed sweep, (None, None) of a plain one; a --baseline without
    seeds is refused rather than silently ignored."""
    seeds = resolve_seeds(sweep, seeds)
    if seeds is None:
        if baseline is not None:
            raise SweepError("--baseline is what a multi-seed ablation compares against: add "
                             "--seeds N (or \"seeds\": N in the sweep file)")
        return None, None
    return seeds, resolve_baseline(sweep, baseline)


def _set_field(config: ml_collections.ConfigDict, key: str, value: Any, where: str) -> None:
    old = config[key]
    if isinstance(old, int) and not isinstance(old, bool) and isinstance(value, float) and (
            value.is_integer()):
        value = int(value)
    try:
        config[key] = value
    except (TypeError, ValueError) as err:
        raise SweepError(f"{where}: cannot set {key}={value!r} ({err})") from None


def variant_config(base: ml_collections.ConfigDict, variant: dict[str, Any], out: str,
                   budget_minutes: float | None = None,
                   seed: int | None = None) -> ml_collections.ConfigDict:
    """The base config with the variant's overrides, workdir <out>/<name>, and the time budget.

    With `seed` k (a multi-seed sweep) the workdir is <out>/<name>/seed<k> and seed/data_seed are
    shifted by k, identically for every variant, so seed k of two variants is a matched pair.
    """
    config = ml_collections.ConfigDict(base.to_dict())
    name = variant["name"]
    for key, value in variant.items():
        if key != "name":
            _set_field(config, key, value, f"variant {name!r}")
    if budget_minutes is not None:
        if "budget_minutes" not in config:
            raise SweepError(
                "--budget-minutes needs the config field `budget_minutes` (the trainer's "
                "wall-clock budget), but this sweep's base config has none: update "
                "configs/base.py / the trainer, or run without --budget-minutes and limit runs "
                "with `iterations` in the variants")
        _set_field(config, "budget_minutes", float(budget_minutes), "--budget-minutes")
    config.workdir = os.path.join(out, name)
    if seed is not None:
        _apply_seed(config, variant, seed)
    return config


def _apply_seed(config: ml_collections.ConfigDict, variant: dict[str, Any], seed: int) -> None:
    """Seed index k: seed and data_seed + k, workdir <workdir>/seed<k>."""
    fixed = [k for k in SEED_FIELDS if k in variant]
    if fixed:
        raise SweepError(f"variant {variant['name']!r} sets {fixed}, which --seeds/\"seeds\" "
                         "controls (seed k runs with base seed + k for every variant, so seeds "
                         "pair up): remove it from the variant, or set it in the base")
    config.seed = config.seed + seed
    config.data_seed = config.data_seed + seed
    config.workdir = os.path.join(config.workdir, f"seed{seed}")
