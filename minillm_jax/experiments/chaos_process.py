"""Training processes of a chaos run and what is checked after them: a child training process
that reports its phases on a pipe (minillm_jax/experiments/chaos_child.py), the checkpoints
committed in a workdir, and the bitwise comparison of two runs' final state and metrics.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from typing import Any

import numpy as np

from minillm_jax.experiments.chaos_child import ENV_PHASES, TMP_MARKER

# metrics.jsonl fields that measure wall-clock time (or count one session's steps): they differ
# between any two runs; every other field must be equal
TIMING_FIELDS = ("tokens_per_s", "steps_run")
CHILD = ("-m", "minillm_jax.experiments.chaos_child")


def repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def child_env(cache_dir: str) -> dict[str, str]:
    """CPU, a persistent compilation cache shared by every process (the same program is
    compiled once), fast compilation, this checkout on the path; no inherited JAX settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JAX_", "XLA_", "MINILLM_", "WANDB_", "SLURM_"))}
    env.update(JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=cache_dir,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", PYTHONPATH=repo_root(),
               XLA_FLAGS="--xla_backend_optimization_level=0 "
                         "--xla_llvm_disable_expensive_passes=true")
    return env


def command(flags: dict[str, Any]) -> list[str]:
    """The training command line (the same for a run and every resume of it)."""
    return [sys.executable, *CHILD, "--config", os.path.join(repo_root(), "configs",
                                                               "demo_2023.py"),
            *[f"--config.{k}={v}" for k, v in flags.items()]]


class Child:
    """One training process; its phases (`step N`, `eval N`, `save N`) arrive on a pipe."""

    def __init__(self, flags: dict[str, Any], env: dict[str, str], log: str,
                 extra_env: dict[str, str] | None = None):
        read, write = os.pipe()
        self.log = log
        self.events: list[tuple[str, int]] = []
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                command(flags), cwd=repo_root(), stdout=out, stderr=subprocess.STDOUT,
                env={**env, **(extra_env or {}), ENV_PHASES: str(write)}, pass_fds=(write,),
                start_new_session=True)
        os.close(write)
        self._pipe, self._buffer = read, b""

    def next_event(self, deadline: float) -> tuple[str, int] | None:
        """The next phase reported; None once the process has ended (or at the deadline)."""
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or self._pipe is None:
                return None
            ready, _, _ = select.select([self._pipe], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(self._pipe, 4096)
                if not chunk:  # every writer is gone: the process ended
                    os.close(self._pipe)
                    self._pipe = None
                    return None
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        phase, step = line.decode().split()
        self.events.append((phase, int(step)))
        return phase, int(step)

    def wait_for(self, phase: str, min_step: int, timeout_s: float) -> int | None:
        """Waits until the process reports `phase` at a step >= min_step; returns that step
        (None if the process ended first or the timeout passed)."""
        deadline = time.monotonic() + timeout_s
        while (event := self.next_event(deadline)) is not None:
            if event[0] == phase and event[1] >= min_step:
                return event[1]
        return None

    def send(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def finish(self, timeout_s: float) -> tuple[int | None, str]:
        """(exit status, log) once the process ends; None (killed) if it outlives timeout_s."""
        try:
            code: int | None = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.send(signal.SIGKILL)
            self.proc.wait()
            code = None
        if self._pipe is not None:
            os.close(self._pipe)
            self._pipe = None
        with open(self.log) as f:
            return code, f.read()


def committed(workdir: str) -> list[int]:
    """The complete checkpoints of a run (orbax renames a finished write to the bare step)."""
    directory = os.path.join(workdir, "checkpoints")
    return sorted(int(d) for d in os.listdir(directory) if d.isdigit()) if os.path.isdir(
        directory) else []


def unfinished(workdir: str) -> list[str]:
    """Checkpoint directories whose write never finished."""
    directory = os.path.join(workdir, "checkpoints")
    return sorted(d for d in os.listdir(directory) if TMP_MARKER in d) if os.path.isdir(
        directory) else []


def resumed_from(log: str) -> int | None:
    """The step a process resumed from (None: it started fresh)."""
    found = re.search(r"^resumed from \S+/checkpoints/(\d+)$", log, re.MULTILINE)
    return int(found.group(1)) if found else None


def records(workdir: str) -> list[dict]:
    """metrics.jsonl records (a line cut off by a kill is left out) without timing fields."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip().endswith("}")]
    return [{k: v for k, v in row.items()
             if not (k.endswith("_time_s") or k in TIMING_FIELDS)} for row in rows]


def logged(workdir: str, key: str) -> set[int]:
    """The steps with a `key` record (e.g. train_loss, val_loss) in metrics.jsonl."""
    return {row["step"] for row in records(workdir) if key in row}


class ChaosError(RuntimeError):
    """A run did something no fault excuses (a traceback, a hang): the chaos run stops."""


def final_arrays(workdir: str, step: int) -> dict[str, np.ndarray]:
    """Every array of checkpoint `step` of a run (see `arrays`)."""
    return arrays(os.path.join(os.path.abspath(workdir), "checkpoints", str(step)))


def arrays(path: str) -> dict[str, np.ndarray]:
    """Every array of the checkpoint in `path` (params, opt_state, train), by item and key
    path."""
    import jax
    import orbax.checkpoint as ocp
    from absl import logging as absl_logging

    # orbax warns that an item directory has no step metadata of its own: it never has
    absl_logging.set_verbosity(absl_logging.ERROR)
    out = {}
    checkpointer = ocp.StandardCheckpointer()
    one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    for item in ("params", "opt_state", "train"):
        # onto this process's first device, whatever the topology it was saved from
        target = jax.tree_util.tree_map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one_device),
            checkpointer.metadata(os.path.join(path, item)).item_metadata.tree)
        tree = checkpointer.restore(os.path.join(path, item), target)
        for keys, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            out[f"{item}{jax.tree_util.keystr(keys)}"] = np.asarray(leaf)
    checkpointer.close()
    return out


def difference(workdir: str, reference: str, step: int) -> str | None:
    """None when the final checkpoints (every array, bitwise) and the metrics records (every
    field but timing) of two runs are equal; else the first difference."""
    got, want = final_arrays(workdir, step), final_arrays(reference, step)
    if sorted(got) != sorted(want):
        return f"different arrays: {sorted(set(got) ^ set(want))[:3]}"
    for key in want:
        a, b = got[key], want[key]
        if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
            return f"{key} differs"
    mine, theirs = records(workdir), records(reference)
    if mine != theirs:
        diff = next((a, b) for a, b in zip(mine + [None] * len(theirs),
                                           theirs + [None] * len(mine)) if a != b)
        return f"metrics.jsonl differs: {diff[0]} vs {diff[1]}"
    return None
