"""Run-directory housekeeping: where a run keeps its files, starting over or continuing a run,
and keeping metrics.jsonl consistent with the checkpoint a run resumes from.

    <workdir>/checkpoints/<step>/          orbax checkpoints (minillm_jax/train/checkpointing.py)
    <workdir>/checkpoints_unreadable/      unreadable checkpoints set aside, never deleted
    <workdir>/checkpoints_discarded/       checkpoints of a trajectory a rollback abandoned
    <workdir>/good_checkpoint.json         the last known good checkpoint (the rollback target)
    <workdir>/metrics.jsonl                the run's metrics (minillm_jax/train/metrics.py)
    <workdir>/wandb_id.txt                 the wandb run id, so a resumed run continues it
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import jax

from minillm_jax.config import ConfigError

CHECKPOINT_DIR = "checkpoints"
UNREADABLE_DIR = "checkpoints_unreadable"  # unreadable steps are moved here, never deleted
# checkpoints of a trajectory a rollback abandoned (never confirmed good) are moved here
DISCARDED_DIR = "checkpoints_discarded"
GOOD_FILE = "good_checkpoint.json"  # {"step": the last known good checkpoint, or null}
# what overwrite=True deletes besides checkpoints
RUN_FILES = ("metrics.jsonl", "wandb_id.txt", GOOD_FILE)


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


def step_dir(workdir: str, step: int) -> str:
    return os.path.join(checkpoint_dir(workdir), str(int(step)))


def prepare_workdir(workdir: str) -> None:
    """Creates the run directory; a directory that cannot be written stops the run now, not at
    its first checkpoint."""
    try:
        os.makedirs(workdir, exist_ok=True)
        # one probe per process: processes sharing the workdir must not remove each other's
        probe = os.path.join(workdir, f".write_test.{jax.process_index()}.{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as err:
        raise ConfigError(
            f"config.workdir={workdir!r} is not writable ({err.strerror}): choose another "
            "directory with --config.workdir=DIR") from None


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def prepare_run(workdir: str, resume: bool, overwrite: bool) -> None:
    """Applies config.resume / config.overwrite to a workdir before training.

    resume=True continues an existing run (nothing to do here). resume=False starts fresh and
    refuses a workdir holding a run (checkpoints or metrics) unless overwrite=True, which deletes
    its checkpoints, metrics.jsonl and wandb id.
    """
    if resume:
        return
    directory = checkpoint_dir(workdir)
    steps = sorted(int(d) for d in os.listdir(directory) if d.isdigit()) if os.path.isdir(
        directory) else []
    metrics = os.path.join(workdir, "metrics.jsonl")
    has_metrics = os.path.exists(metrics) and os.path.getsize(metrics) > 0
    _sync("minillm_overwrite_check")  # every process looks before process 0 deletes anything
    if not steps and not has_metrics:
        return
    if not overwrite:
        held = f"checkpoints for steps {steps}" if steps else "a metrics.jsonl"
        raise ConfigError(
            f"config.resume=False but {os.path.abspath(workdir)} already holds a run ({held}): "
            "pass --config.overwrite=True to delete it and start over, choose another "
            "--config.workdir, or drop --config.resume=False to continue it")
    if jax.process_index() == 0:
        shutil.rmtree(directory, ignore_errors=True)
        for name in RUN_FILES:
            path = os.path.join(workdir, name)
            if os.path.exists(path):
                os.remove(path)
    _sync("minillm_overwrite_run")


def trim_metrics(workdir: str, step: int) -> int:
    """Drops the metrics.jsonl records a run resumed at `step` will write again: every record
    with a larger step, the final_* records of `step`, and a line cut off by a kill. Returns the
    number of records dropped."""
    path = os.path.join(workdir, "metrics.jsonl")
    if jax.process_index() != 0 or not os.path.exists(path):
        return 0
    kept, dropped = [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                record_step = int(record["step"])
            except (ValueError, KeyError, TypeError):
                dropped += 1
                continue
            final = any(k.startswith("final_") for k in record)
            if record_step < step or (record_step == step and not final):
                kept.append(line if line.endswith("\n") else line + "\n")
            else:
                dropped += 1
    if dropped:
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(kept)
        os.replace(tmp, path)
    return dropped


NO_MARKER = object()  # read_good_step: no marker file (a run of an older version)


def read_good_step(workdir: str) -> Any:
    """The last known good checkpoint step recorded in <workdir>/good_checkpoint.json: an int,
    None (the run has none yet), or `NO_MARKER` when the file is absent or unreadable (a run
    of an older version, which kept no marker)."""
    try:
        with open(os.path.join(workdir, GOOD_FILE), encoding="utf-8") as f:
            step = json.load(f)["step"]
        return None if step is None else int(step)
    except (OSError, ValueError, KeyError, TypeError):
        return NO_MARKER


def write_good_step(workdir: str, step: int | None) -> None:
    """Records the last known good checkpoint step (process 0; written atomically)."""
    if jax.process_index() != 0:
        return
    path = os.path.join(workdir, GOOD_FILE)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"step": step}, f)
    os.replace(tmp, path)
