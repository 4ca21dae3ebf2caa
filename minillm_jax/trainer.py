"""The training loop: build, compile once, restore or start, then step / evaluate / save / log."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from minillm_jax import checkpointing, data, memory, rundir
from minillm_jax.benchmark import model_flops_per_token
from minillm_jax.budget import TimeBudget
from minillm_jax.build import Run, build_run, enable_compilation_cache
from minillm_jax.config import TrainConfig, build_config
from minillm_jax.evaluator import Evaluator, format_eval
from minillm_jax.metrics import MetricsWriter
from minillm_jax.optim import eval_params, plateau_observe
from minillm_jax.params_info import describe as describe_params
from minillm_jax.progress import NonFiniteLoss, Progress, log
from minillm_jax.sharding import to_global
from minillm_jax.signals import StopSignals
from minillm_jax.train_step import TrainState


class TrainingError(RuntimeError):
    """The run cannot continue (e.g. the loss became NaN); the message says what was kept."""


def maybe_initialize_distributed() -> None:
    """Multi-host: jax.distributed.initialize() when the launcher set up a coordinator
    (JAX_COORDINATOR_ADDRESS, or cluster environments JAX detects itself: SLURM, TPU pods)."""
    wants = os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("MINILLM_DISTRIBUTED")
    if wants and not jax.distributed.is_initialized():
        jax.distributed.initialize()


def train(config: ml_collections.ConfigDict | TrainConfig, name: str = "run") -> dict[str, Any]:
    """Trains `config` to its iterations (or the last checkpoint's step onward); returns the
    final evaluation plus run facts."""
    config = build_config(config, name)
    maybe_initialize_distributed()
    run = build_run(config)
    rundir.prepare_workdir(config.run.workdir)
    checkpointing.quiet_orbax_logs()
    rundir.prepare_run(config.run.workdir, config.run.resume, config.run.overwrite)
    data.ensure_dataset(config.data.dataset, config.data.data_dir)
    log(f"model {config.model.model}: "
        f"{describe_params(run.abstract_state.params, config.model)} | mesh "
        f"{dict(run.mesh.shape)} on {jax.device_count()} {jax.devices()[0].platform} device(s) "
        f"| compute {config.execution.compute_dtype}")

    log(f"attention: {run.attention.impl} ({run.attention.reason})")
    cache = enable_compilation_cache(config.execution.compilation_cache)
    t0 = time.perf_counter()
    compiled_step = run.compile_train_step(config.run.iterations)
    compile_s = time.perf_counter() - t0
    compiled_eval = run.compile_eval_step()
    needs = {"train step": memory.step_bytes(compiled_step),
             "eval step": memory.step_bytes(compiled_eval)}
    log(f"compiled train step in {compile_s:.1f}s (cache: {cache or 'off'}) | "
        f"{memory.describe(needs)}")
    # before anything is allocated: one line instead of an XLA out-of-memory traceback
    memory.check_fits(needs, memory.advice(config))

    checkpoints = checkpointing.RunCheckpoints(config.run.workdir, keep=config.run.keep,
                                               keep_best=config.run.keep_best)
    state, data_state = _restore_or_start(run, checkpoints)
    loader = data.TrainLoader(
        config.data.data_dir, batch_size=config.data.batch_size,
        seq_len=config.model.sequence_length, seed=config.data.data_seed,
        acc_steps=config.data.acc_steps, process_index=jax.process_index(),
        process_count=jax.process_count())
    if data_state is not None:
        loader.set_state(data_state)
    writer = MetricsWriter(config.run.workdir, enabled=jax.process_index() == 0,
                           wandb=config.run.wandb, config=config.to_dict(),
                           project=config.run.wandb_project,
                           name=config.run.wandb_run_name or name)
    loop = TrainLoop(run, Evaluator(run, compiled_eval), checkpoints, loader, writer, compile_s)
    try:
        with StopSignals() as stop:
            final = loop.train(state, compiled_step, stop)
        checkpoints.wait()  # the last save is complete (or its failure reported) before returning
    finally:
        try:
            checkpoints.close()
        except checkpointing.CheckpointError as err:  # already failing: report, don't mask
            log(f"error: {err}")
        writer.close()
        loader.close()
    pauses = checkpoints.blocking_s
    if pauses:
        log(f"checkpoints: {len(pauses)} saved in {checkpoints.directory}; training paused "
            f"{1000 * float(np.median(pauses)):.0f} ms per save (median; max "
            f"{1000 * max(pauses):.0f} ms), the writes ran in the background")
    return final


def _restore_or_start(run: Run, checkpoints: checkpointing.RunCheckpoints,
                      ) -> tuple[TrainState, dict | None]:
    """The newest readable checkpoint's state and loader position (unreadable ones are set aside
    with a warning; one saved for another model stops the run), else a fresh state. Trims
    metrics.jsonl to the step the run continues from."""
    config = run.config
    restored = (checkpoints.restore_latest(run.abstract_state, config)
                if config.run.resume else None)
    if restored is None:
        state, data_state, start = run.init_state(), None, 0
    else:
        state, data_state, start = restored
        if state.opt_state is None:  # params-only checkpoint (e.g. imported weights)
            state = state.replace(opt_state=jax.jit(
                run.tx.init, out_shardings=run.state_shardings.opt_state)(state.params))
        log(f"resumed from {rundir.step_dir(config.run.workdir, start)}")
    rundir.trim_metrics(config.run.workdir, start)  # drop what the resumed steps log again
    return state, data_state


@dataclasses.dataclass
class TrainLoop:
    """One run's loop: train step, maybe evaluate, maybe save, log (one step late)."""

    run: Run
    evaluator: Evaluator
    checkpoints: checkpointing.RunCheckpoints
    loader: Any  # minillm_jax.data.TrainLoader
    writer: MetricsWriter
    compile_s: float

    def __post_init__(self) -> None:
        c = self.run.config
        self.config = c
        self.progress = Progress(self.writer, log_freq=c.run.log_freq,
                                 tokens_per_step=c.tokens_per_step,
                                 flops_per_token=model_flops_per_token(
                                     c, self.run.abstract_state.params))

    def train(self, state: TrainState, step_fn: Any, stop: StopSignals) -> dict[str, Any]:
        """Trains from state.step to the horizon (or the budget, or a stop signal)."""
        c = self.config.run
        start = step = int(jax.device_get(state.step))
        total, stop_reason = c.iterations, "iterations"
        budget = TimeBudget(self.config, self.compile_s) if c.budget_minutes > 0 else None
        while step < total:
            if budget is not None:
                horizon = budget.horizon(start, step - start) if step > start else None
                if budget.expired():
                    total, stop_reason = step, "time budget"
                    log(f"time budget of {c.budget_minutes} min spent (keeping "
                        f"{budget.reserve_s:.0f}s for the final eval and save): stopping at step "
                        f"{step}")
                    break
                if horizon is not None:
                    step_fn, total = self._move_horizon(budget, horizon, total, step - start)
            batch = to_global(next(self.loader), self.run.mesh, batch_axis=1)
            state, metrics = step_fn(state, batch)  # dispatched; runs while the last is read
            self._report(step, metrics, total)
            step += 1
            is_last = step == total
            val_loss = self._evaluate(state, step, total) if (
                step % c.eval_freq == 0 and not is_last) else None
            if val_loss is not None:
                state = state.replace(
                    opt_state=plateau_observe(self.config.optim, state.opt_state, val_loss))
            stopping = not is_last and stop.should_stop(step)
            if not is_last and (stopping or val_loss is not None and c.keep_best or (
                    c.save_every and step % c.save_every == 0)):
                self._save(state, step, total, val_loss if c.keep_best else None)
            if stopping:  # SIGTERM / SIGINT: the checkpoint of this step is being written
                self.checkpoints.wait()
                log(f"{stop.received}: stopped at step {step}/{total} with a checkpoint in "
                    f"{rundir.step_dir(c.workdir, step)}; run the same command again to resume")
                return {"interrupted": stop.received, "step": step, "workdir": c.workdir,
                        "train_time_s": self.progress.train_time_s}
        self._flush(total)
        if budget is not None and total < c.iterations:
            stop_reason = "time budget"
        return self._finish(state, start, stop_reason)

    def _report(self, step: int, metrics: dict, total: int) -> None:
        try:
            self.progress.push(step, metrics, total)
        except NonFiniteLoss as err:
            raise self._nonfinite(err) from None

    def _flush(self, total: int) -> None:
        try:
            self.progress.flush(total)
        except NonFiniteLoss as err:
            raise self._nonfinite(err) from None

    def _nonfinite(self, err: NonFiniteLoss) -> TrainingError:
        return TrainingError(
            f"{err}: stopping; the last good checkpoint is kept in "
            f"{rundir.checkpoint_dir(self.config.run.workdir)} (step "
            f"{self.checkpoints.latest_step()}). Lower lr or enable grad_clip.")

    def _move_horizon(self, budget: TimeBudget, horizon: int, total: int, steps_done: int,
                      ) -> tuple[Any, int]:
        log(f"time budget: {budget.step_time_s * 1000:.0f} ms/step measured, lr schedule "
            f"horizon {total} -> {horizon} steps")
        compiling = time.perf_counter()
        step_fn = self.run.compile_train_step(horizon)
        budget.compile_s = time.perf_counter() - compiling
        budget.mark(steps_done)
        return step_fn, horizon

    def _evaluate(self, state: TrainState, step: int, total: int) -> float:
        """A periodic evaluation on the fixed first eval_batches batches; returns the val loss."""
        self._flush(total)
        with self.progress.paused():
            result = self.evaluator(eval_params(state.opt_state, state.params),
                                    self.config.run.eval_batches)
        log(f"eval @ {step}: {format_eval(result)}")
        self.writer.write(step, **result, **self.progress.totals(step))
        return result["val_loss"]

    def _save(self, state: TrainState, step: int, total: int, val_loss: float | None) -> None:
        """An asynchronous checkpoint of `step` (ranked by val_loss with keep_best)."""
        self._flush(total)  # logged before the checkpoint, so a resume never repeats it
        metrics = {checkpointing.BEST_METRIC: val_loss} if val_loss is not None else None
        with self.progress.paused():
            self.checkpoints.save(step, state, self.loader.get_state(), self.config,
                                  metrics=metrics)

    def _finish(self, state: TrainState, start: int, stop_reason: str) -> dict[str, Any]:
        """The final save, the final evaluation (the whole validation set by default), a sample."""
        c = self.config
        final_step = int(jax.device_get(state.step))
        self.checkpoints.save(final_step, state, self.loader.get_state(), c)
        max_batches = None if c.run.final_full_eval else c.run.eval_batches
        final_params = eval_params(state.opt_state, state.params)  # schedule-free: x, not y
        result = self.evaluator(final_params, max_batches)
        log(f"final eval @ {final_step}: {format_eval(result)}")
        totals = self.progress.totals(final_step)
        self.writer.write(final_step, **{f"final_{k}": v for k, v in result.items()},
                          steps_run=final_step - start, stop_reason=stop_reason, **totals)
        result.update(step=final_step, workdir=c.run.workdir, train_time_s=totals["train_time_s"],
                      steps_run=final_step - start, stop_reason=stop_reason)
        if c.run.sample_tokens > 0 and jax.process_index() == 0 and jax.process_count() == 1:
            from minillm_jax.sampling import generate

            text = generate(self.run.model, jax.device_get(final_params), c.run.sample_prompt,
                            max_new_tokens=c.run.sample_tokens,
                            temperature=c.run.sample_temperature, top_k=c.run.sample_top_k,
                            seed=c.run.seed)
            log(f"sample: {text!r}")
            result["sample"] = text
        return result
