"""`train()`: build the run, compile once, restore or start, then drive the TrainLoop
(minillm_jax/train/loop.py) and finish (final save, final evaluation, sample)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from minillm_jax import data
from minillm_jax.train import checkpointing
from minillm_jax.train.run_checkpoints import RunCheckpoints, newest_data_state
from minillm_jax.train import distributed
from minillm_jax.train import memory
from minillm_jax.train import rundir
from minillm_jax.train.budget import TimeBudget
from minillm_jax.model.attention import fused_config_advice
from minillm_jax.train.build import Run, build_run, enable_compilation_cache
from minillm_jax.config import TrainConfig, build_config
from minillm_jax.train.evaluator import Evaluator
from minillm_jax.train.metrics import MetricsWriter
from minillm_jax.model.params_info import describe as describe_params
from minillm_jax.train.progress import log
from minillm_jax.train.signals import StopSignals
from minillm_jax.train.loop import TrainingError, TrainLoop, with_opt_state
from minillm_jax.train.step import TrainState

__all__ = ["TrainingError", "clock", "train"]

# Wall-clock seconds for the time budget and time-based saves (tests substitute a fake clock).
clock: Callable[[], float] = time.monotonic


def train(config: ml_collections.ConfigDict | TrainConfig, name: str = "run") -> dict[str, Any]:
    """Trains `config` to its iterations (or the last checkpoint's step onward); returns the
    final evaluation plus run facts."""
    session_start = clock()  # the time budget counts from here (README "Time budget")
    config = build_config(config, name)
    distributed.initialize()
    run = build_run(config)
    config = run.config  # compute_dtype resolved for the devices
    rundir.prepare_workdir(config.run.workdir)
    checkpointing.quiet_orbax_logs()
    rundir.prepare_run(config.run.workdir, config.run.resume, config.run.overwrite)
    data.ensure_dataset(config.data.dataset, config.data.data_dir)
    # before compiling: damaged or changed data, or a batch or sequence the data cannot fill, is
    # one line, not a traceback after minutes of compilation
    fingerprint = _check_data(config)
    data.num_val_batches(config.data.data_dir, batch_size=config.data.eval_batch_size,
                         seq_len=config.model.sequence_length)
    loader = data.TrainLoader(
        config.data.data_dir, batch_size=config.data.batch_size,
        seq_len=config.model.sequence_length, seed=config.data.data_seed,
        acc_steps=config.data.acc_steps, process_index=jax.process_index(),
        process_count=jax.process_count(), fingerprint=fingerprint,
        allow_data_change=config.data.allow_data_change)
    try:
        return _train(run, loader, session_start, name)
    finally:
        loader.close()


def _check_data(config: TrainConfig) -> dict[str, Any]:
    """The data's fingerprint after data.check_data, against the newest checkpoint's when the
    run resumes (the loader checks again against the checkpoint actually restored)."""
    saved = newest_data_state(config.run.workdir) if config.run.resume else None
    fingerprint, notes = data.check_data(
        config.data.data_dir, config.model.vocab_size,
        saved=(saved[0], saved[1].get("data_fingerprint")) if saved else None,
        allow_change=config.data.allow_data_change)
    for note in notes:
        log(note)
    return fingerprint


def _train(run: Run, loader: Any, session_start: float, name: str) -> dict[str, Any]:
    config = run.config
    log(f"model {config.model.model}: "
        f"{describe_params(run.abstract_state.params, config.model)} | mesh "
        f"{dict(run.mesh.shape)} on {jax.device_count()} {jax.devices()[0].platform} device(s)")
    log(f"compute dtype: {config.execution.compute_dtype} ({run.compute_dtype_reason})")
    log(f"attention: {run.attention.impl} ({run.attention.reason})")
    advice = fused_config_advice(run.attention, config.model.attention_dropout)
    if advice:
        log(advice)

    cache = enable_compilation_cache(config.execution.compilation_cache)
    t0 = clock()
    compiled_step = run.compile_train_step()
    compile_s = clock() - t0
    compiled_eval = run.compile_eval_step()
    needs = {"train step": memory.step_bytes(compiled_step),
             "eval step": memory.step_bytes(compiled_eval)}
    log(f"compiled train step in {compile_s:.1f}s (cache: {cache or 'off'}) | "
        f"{memory.describe(needs)}")
    # before anything is allocated: one line instead of an XLA out-of-memory traceback
    memory.check_fits(needs, memory.advice(config))

    checkpoints = RunCheckpoints(config.run.workdir, keep=config.run.keep,
                                               keep_best=config.run.keep_best)
    start = _restore_or_start(run, checkpoints)
    if start.data_state is not None:
        loader.set_state(start.data_state)
    writer = MetricsWriter(config.run.workdir, enabled=jax.process_index() == 0,
                           wandb=config.run.wandb, config=config.to_dict(),
                           project=config.run.wandb_project,
                           name=config.run.wandb_run_name or name)
    loop_state = start.loop_state or {}
    budget = (TimeBudget(config, clock, session_start, loop_state.get("budget"))
              if config.run.budget_minutes > 0 else None)
    loop = TrainLoop(run, Evaluator(run, compiled_eval), checkpoints, loader, writer, budget,
                     clock)
    loop.begin(start.good, start.step, int(loop_state.get("skipped_steps", 0)))
    exit_code = 1
    try:
        with StopSignals() as stop:
            final = loop.train(start.state, compiled_step, stop)
        checkpoints.wait()  # the last save is complete (or its failure reported) before returning
        exit_code = 0
    finally:
        try:
            checkpoints.close()
        except checkpointing.CheckpointError as err:  # already failing: report, don't mask
            log(f"error: {err}")
        writer.close(exit_code)
    pauses = checkpoints.blocking_s
    if pauses:
        log(f"checkpoints: {len(pauses)} saved in {checkpoints.directory}; training paused "
            f"{1000 * float(np.median(pauses)):.0f} ms per save (median; max "
            f"{1000 * max(pauses):.0f} ms), the writes ran in the background")
    return final


@dataclasses.dataclass
class _Start:
    """Where a session starts: the state, loader position and loop state to continue from, the
    step, and the last known good checkpoint (None: none yet)."""

    state: TrainState
    data_state: dict | None
    loop_state: dict | None
    step: int
    good: int | None


def _restore_or_start(run: Run, checkpoints: RunCheckpoints) -> _Start:
    """The newest readable checkpoint (unreadable ones are set aside with a warning; one saved
    for another model stops the run), else a fresh state. Trims metrics.jsonl to the step the
    run continues from.

    The last known good checkpoint comes from <workdir>/good_checkpoint.json: the newest
    existing step not after the one it names. A run directory without that file (an older
    version's) takes the checkpoint it resumes from as good, as that version did."""
    config = run.config
    restored = (checkpoints.restore_newest(run.abstract_state, config)
                if config.run.resume else None)
    if restored is None:
        start = _Start(run.init_state(), None, None, 0, None)
    else:
        marker = rundir.read_good_step(config.run.workdir)
        if marker is rundir.NO_MARKER:
            good = restored.step
        elif marker is None:
            good = None
        else:
            good = max((s for s in checkpoints.steps() if s <= marker), default=None)
        start = _Start(with_opt_state(run, restored.state), restored.data_state,
                       restored.loop_state, restored.step, good)
        log(f"resumed from {rundir.step_dir(config.run.workdir, restored.step)}")
    rundir.trim_metrics(config.run.workdir, start.step)  # drop what the resumed steps log again
    return start


