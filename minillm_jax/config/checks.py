"""Checks of single config values, each raising one ConfigError line that names the field, its
value and what would be valid; and the schedule arithmetic the checks need (pure, so that
checking a config needs no optimizer code).
"""

from __future__ import annotations

import math
import re
from typing import Any

class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the field and the fix.
    `field` is the field's name when the error is about one field."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field if field is not None else _field_named_in(message)


def _field_named_in(message: str) -> str | None:
    """The field a message starts with ("config.lr=..." -> "lr"), if any."""
    match = re.match(r"config\.([A-Za-z0-9_]+)", message)
    return match.group(1) if match else None



# ------------------------------------------------------------------------------------------------
# Field checks (used by the dataclasses' __post_init__)


def fail(field: str, value: Any, expected: str) -> None:
    raise ConfigError(f"config.{field}={value!r} {expected}", field)


def positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not (value > 0 and math.isfinite(value)):
            fail(name, value, "must be > 0 (and finite)")


def non_negative(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not (value >= 0 and math.isfinite(value)):
            fail(name, value, "must be >= 0 (and finite)")


def type_error(name: str, value: Any, default: Any) -> str | None:
    """Why `value` cannot stand for a field whose configs/base.py default is `default` (None if
    it can): a bool, an integer, a finite number or a string, as the default is."""
    if isinstance(default, bool):
        ok, want = isinstance(value, bool), "True or False"
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
        want = "an integer"
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            return f"config.{name}={value!r} must be a finite number"
        want = "a number"
    elif isinstance(default, str):
        ok, want = isinstance(value, str), "a string"
    else:
        return None
    return None if ok else (f"config.{name}={value!r} must be {want} (got "
                            f"{type(value).__name__})")


def in_range(obj: Any, name: str, low: float, high: float, *, low_open: bool = False,
              high_open: bool = True) -> None:
    value = getattr(obj, name)
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (isinstance(value, (int, float)) and math.isfinite(value) and above and below):
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        fail(name, value, f"must be in {interval}")


def one_of(obj: Any, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(obj, name)
    if value not in choices:
        fail(name, value, f"is unknown: use one of {list(choices)}")


def resolve(obj: Any, name: str, value: Any) -> None:
    """Sets a field of a frozen dataclass while it is being built (aliases, sentinels)."""
    object.__setattr__(obj, name, value)


# ------------------------------------------------------------------------------------------------
# Schedule arithmetic

MAX_SGDR_CYCLES = 1000


def sgdr_cycles(total_steps: int, first_cycle: float, cycle_mult: float = 1.0,
                max_cycles: int = MAX_SGDR_CYCLES) -> list[int]:
    """Lengths of the SGDR cycles covering total_steps (the last one cut to end at total_steps).

    first_cycle < 1 is a fraction of total_steps, >= 1 a number of steps.
    """
    if first_cycle <= 0:
        raise ValueError(f"sgdr_first_cycle={first_cycle} must be positive")
    if cycle_mult < 1.0:
        raise ValueError(f"sgdr_cycle_mult={cycle_mult} must be >= 1")
    t0 = first_cycle * total_steps if first_cycle < 1 else first_cycle
    lengths, start = [], 0
    while start < total_steps:
        if len(lengths) == max_cycles:
            raise ValueError(f"sgdr would need more than {max_cycles} cycles: raise "
                             "sgdr_first_cycle or sgdr_cycle_mult")
        length = max(1, int(round(t0 * cycle_mult ** len(lengths))))
        length = min(length, total_steps - start)
        lengths.append(length)
        start += length
    return lengths


def check_schedule(cfg: Any, iterations: int) -> None:
    """The schedule fits a run of `iterations` steps (raises ValueError saying what to change).

    Pure arithmetic on the config, kept here so that checking a config needs no optimizer code;
    minillm_jax.optim.schedules builds the schedule from the same `sgdr_cycles`. `cfg` is an OptimConfig.
    """
    if cfg.scheduler == "sgdr":
        lengths = sgdr_cycles(iterations, cfg.sgdr_first_cycle, cfg.sgdr_cycle_mult)
        warmup = int(round(cfg.warmup_percent * iterations))
        if warmup >= lengths[0]:
            raise ValueError(f"the warm-up ({warmup} steps) must be shorter than the first "
                             f"sgdr cycle ({lengths[0]} steps): lower warmup_percent or raise "
                             "sgdr_first_cycle")
