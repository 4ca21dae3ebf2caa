"""Multi-process runs (several GPU hosts, a TPU pod, or several processes on one machine).

Every process runs the same command; `initialize()` connects them through jax.distributed
before anything touches a device. Each process then loads only its rows of the global batch
(minillm_jax.data.TrainLoader) and one mesh spans all devices (minillm_jax.train.sharding).
"""

from __future__ import annotations

import os
import sys

import jax
import numpy as np

from minillm_jax.config import ConfigError


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} must be an integer") from None


def initialize() -> None:
    """jax.distributed.initialize() when the launcher asks for it.

    JAX_COORDINATOR_ADDRESS=host:port with JAX_NUM_PROCESSES and JAX_PROCESS_ID (jax itself does
    not read the last two: they are passed on here), or MINILLM_DISTRIBUTED=1 in a cluster
    environment JAX detects itself (SLURM, Open MPI, TPU pods), which then supplies all three.
    On CPU, processes exchange collectives through gloo (set before the backends start).
    """
    if jax.distributed.is_initialized():
        return
    if not (os.environ.get("JAX_COORDINATOR_ADDRESS") or _env_flag("MINILLM_DISTRIBUTED")):
        tasks = os.environ.get("SLURM_NTASKS", "") if "SLURM_STEP_ID" in os.environ else ""
        if tasks.isdigit() and int(tasks) > 1:
            print(f"warning: this SLURM step has {tasks} tasks but MINILLM_DISTRIBUTED is not "
                  "set: every task trains on its own (into the same workdir unless they "
                  "differ); export MINILLM_DISTRIBUTED=1 for one run over all tasks",
                  file=sys.stderr, flush=True)
        return
    kwargs = {}
    for arg, name in (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID")):
        value = _env_int(name)
        if value is not None:
            kwargs[arg] = value
    if jax.config.jax_cpu_collectives_implementation is None:  # none: CPU runs cannot talk
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(**kwargs)
    except ValueError as err:  # e.g. a coordinator address but no process count
        raise ConfigError(
            f"jax.distributed.initialize() failed: {err} Set JAX_COORDINATOR_ADDRESS=host:port, "
            "JAX_NUM_PROCESSES and JAX_PROCESS_ID on every process, or MINILLM_DISTRIBUTED=1 "
            "under SLURM / Open MPI / TPU pods") from None


def agree(*values: int) -> tuple[int, ...]:
    """Process 0's values on every process (a no-op in single-process runs): decisions that
    depend on a process's own clock (the time budget, time-based saves) must be the same
    everywhere, or the processes would stop, save or recompile at different steps."""
    if jax.process_count() == 1:
        return values
    from jax.experimental import multihost_utils

    out = multihost_utils.broadcast_one_to_all(np.asarray(values, np.int32))
    return tuple(int(v) for v in out)


def all_max(value: int) -> int:
    """The largest of every process's `value` (the value itself in single-process runs): one
    decision all processes take together, e.g. "some process could not read this checkpoint",
    before any of them acts on it."""
    if jax.process_count() == 1:
        return int(value)
    from jax.experimental import multihost_utils

    values = multihost_utils.process_allgather(np.asarray(value, np.int32))
    return int(np.max(values))
