"""The training loop: build, compile once, restore or start, then step / evaluate / save / log."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from minillm_jax import checkpointing, data, distributed, memory, rundir
from minillm_jax.budget import TimeBudget
from minillm_jax.build import Run, build_run, enable_compilation_cache
from minillm_jax.config import TrainConfig, build_config
from minillm_jax.evaluator import Evaluator, format_eval
from minillm_jax.metrics import MetricsWriter
from minillm_jax.mfu import device_peak, model_flops_per_token
from minillm_jax.optim import eval_params, plateau_observe
from minillm_jax.params_info import describe as describe_params
from minillm_jax.progress import Progress, log
from minillm_jax.sharding import to_global
from minillm_jax.signals import StopSignals
from minillm_jax.train_step import TrainState

# Wall-clock seconds for the time budget and time-based saves (tests substitute a fake clock).
clock: Callable[[], float] = time.monotonic


class TrainingError(RuntimeError):
    """The run cannot continue (e.g. its loss stays NaN); the message says what was kept."""


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
    log(f"model {config.model.model}: "
        f"{describe_params(run.abstract_state.params, config.model)} | mesh "
        f"{dict(run.mesh.shape)} on {jax.device_count()} {jax.devices()[0].platform} device(s)")
    log(f"compute dtype: {config.execution.compute_dtype} ({run.compute_dtype_reason})")
    log(f"attention: {run.attention.impl} ({run.attention.reason})")

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

    checkpoints = checkpointing.RunCheckpoints(config.run.workdir, keep=config.run.keep,
                                               keep_best=config.run.keep_best)
    state, data_state, loop_state = _restore_or_start(run, checkpoints)
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
    budget = (TimeBudget(config, clock, session_start, (loop_state or {}).get("budget"))
              if config.run.budget_minutes > 0 else None)
    loop = TrainLoop(run, Evaluator(run, compiled_eval), checkpoints, loader, writer, budget)
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
                      ) -> tuple[TrainState, dict | None, dict | None]:
    """The newest readable checkpoint's (state, loader position, loop state) (unreadable ones
    are set aside with a warning; one saved for another model stops the run), else a fresh
    state. Trims metrics.jsonl to the step the run continues from."""
    config = run.config
    restored = (checkpoints.restore_latest(run.abstract_state, config)
                if config.run.resume else None)
    if restored is None:
        state, data_state, loop_state, start = run.init_state(), None, None, 0
    else:
        state, data_state, start = restored
        loop_state = checkpoints.loop_state(start)
        state = _with_opt_state(run, state)
        log(f"resumed from {rundir.step_dir(config.run.workdir, start)}")
    rundir.trim_metrics(config.run.workdir, start)  # drop what the resumed steps log again
    return state, data_state, loop_state


def _with_opt_state(run: Run, state: TrainState) -> TrainState:
    """A params-only checkpoint (e.g. imported weights) starts a fresh optimizer state."""
    if state.opt_state is not None:
        return state
    return state.replace(opt_state=jax.jit(
        run.tx.init, out_shardings=run.state_shardings.opt_state)(state.params))


class _RollBack(Exception):
    """Too many non-finite steps in a row: go back to the last checkpoint."""

    def __init__(self, step: int, loss: float):
        super().__init__(step, loss)
        self.step, self.loss = step, loss


@dataclasses.dataclass
class TrainLoop:
    """One run's loop: train step, maybe evaluate, maybe save, log (one step late)."""

    run: Run
    evaluator: Evaluator
    checkpoints: checkpointing.RunCheckpoints
    loader: Any  # minillm_jax.data.TrainLoader
    writer: MetricsWriter
    budget: TimeBudget | None

    def __post_init__(self) -> None:
        c = self.run.config
        self.config = c
        peak = device_peak(jax.devices()[0])
        flops = model_flops_per_token(self.run.abstract_state.params, c.model)
        log(f"{flops / 1e9:.3g} GFLOP per token (minillm_jax/mfu.py); "
            + (f"MFU against {peak.flops * jax.device_count() / 1e12:,.0f} TFLOP/s "
               f"({jax.device_count()} x {peak.source})" if peak.flops is not None else
               f"MFU n/a: {peak.source}"))
        self.progress = Progress(self.writer, log_freq=c.run.log_freq,
                                 tokens_per_step=c.tokens_per_step, flops_per_token=flops,
                                 peak=peak, devices=jax.device_count())
        self.total = c.run.iterations  # the schedule's horizon: the budget may move it
        self.nonfinite_in_a_row = 0
        self.rolled_back_to: int | None = None
        self.last_save = clock()

    def train(self, state: TrainState, step_fn: Any, stop: StopSignals) -> dict[str, Any]:
        """Trains from state.step to the horizon (or the budget, or a stop signal)."""
        start = int(jax.device_get(state.step))
        self.step_fn = step_fn
        # a resumed budgeted run continues with the horizon it saved
        self._set_horizon(self.budget.state.horizon if self.budget is not None else self.total)
        if self.budget is not None:
            self.budget.start(start)
        while True:
            try:
                state, stopped = self._steps(state, stop)
                if stopped is not None:
                    return stopped
                self._flush()
                break
            except _RollBack as rollback:
                state = self._roll_back(rollback.step, rollback.loss)
        return self._finish(state, start)

    def _clock_decides(self, step: int) -> bool:
        """Whether time-based decisions are taken at `step`: every step in one process; every
        log_freq steps across processes, where process 0's clock decides for all (a broadcast)."""
        return jax.process_count() == 1 or step % self.config.run.log_freq == 0

    def _steps(self, state: TrainState, stop: StopSignals) -> tuple[TrainState, dict | None]:
        c = self.config.run
        step = int(jax.device_get(state.step))
        while step < self.total:
            if self.budget is not None and self._clock_decides(step):
                expired, horizon = distributed.agree(
                    int(self.budget.expired()), self.budget.new_horizon(step) or -1)
                if expired:
                    log(f"time budget of {c.budget_minutes} min spent (keeping "
                        f"{self.budget.state.reserve_s:.0f}s for the final eval and save): "
                        f"stopping at step {step}")
                    self.total = step
                    break
                if horizon > 0 and horizon != self.total:
                    log(f"time budget: {self.budget.state.step_time_s * 1000:.0f} ms/step "
                        f"measured, lr schedule horizon {self.total} -> {horizon} steps")
                    self._set_horizon(horizon)
                    self.budget.mark(step)
            batch = to_global(next(self.loader), self.run.mesh, batch_axis=1)
            # dispatched: it runs while the previous step's metrics are read
            state, metrics = self.step_fn(state, batch, self.horizon)
            self._watch(self.progress.push(step, metrics, self.total))
            step += 1
            is_last = step == self.total
            val_loss = self._evaluate(state, step) if (
                step % c.eval_freq == 0 and not is_last) else None
            if val_loss is not None:
                state = state.replace(
                    opt_state=plateau_observe(self.config.optim, state.opt_state, val_loss))
            stopping = not is_last and stop.should_stop(step)
            if not is_last and (stopping or val_loss is not None and c.keep_best
                                or self._save_due(step)):
                self._save(state, step, val_loss if c.keep_best else None)
            if stopping:  # SIGTERM / SIGINT: the checkpoint of this step is being written
                self.checkpoints.wait()
                log(f"{stop.received}: stopped at step {step}/{self.total} with a checkpoint in "
                    f"{rundir.step_dir(c.workdir, step)}; run the same command again to resume")
                return state, {"interrupted": stop.received, "step": step, "workdir": c.workdir,
                               "train_time_s": self.progress.train_time_s}
        return state, None

    def _save_due(self, step: int) -> bool:
        """Every save_every steps, and once save_every_minutes have passed since the last save."""
        c = self.config.run
        if c.save_every and step % c.save_every == 0:
            return True
        if not c.save_every_minutes or not self._clock_decides(step):
            return False
        late = clock() - self.last_save >= 60 * c.save_every_minutes
        return bool(distributed.agree(int(late))[0])

    def _watch(self, reported: tuple[int, dict[str, float]] | None) -> None:
        """Counts non-finite steps in a row (their updates were skipped by the step itself)."""
        if reported is None:
            return
        step, values = reported
        self.nonfinite_in_a_row = self.nonfinite_in_a_row + 1 if values["skipped"] else 0
        if self.nonfinite_in_a_row >= self.config.run.nonfinite_rollback_after:
            raise _RollBack(step + 1, values["loss"])

    def _flush(self) -> None:
        self._watch(self.progress.flush(self.total))

    def _roll_back(self, bad_step: int, loss: float) -> TrainState:
        """Back to the newest checkpoint, keeping the data position: the batches that produced
        the non-finite steps are skipped (PaLM's practice). A second rollback to the same
        checkpoint, or none to go back to, stops the run."""
        c = self.config.run
        self.progress.drop()
        self.checkpoints.wait()
        target = self.checkpoints.latest_step()
        kept = f"checkpoints are kept in {rundir.checkpoint_dir(c.workdir)}"
        why = (f"the loss became {loss} at step {bad_step}: {self.nonfinite_in_a_row} steps in a "
               "row with a non-finite loss or gradient norm")
        if target is None:
            raise TrainingError(f"{why} and there is no checkpoint to roll back to: stopping. "
                                "Lower lr, enable grad_clip, or set save_every")
        if target == self.rolled_back_to:
            raise TrainingError(
                f"{why}, again after rolling back to step {target}: stopping; {kept} (newest: "
                f"step {target}). Lower lr or enable grad_clip, then rerun to resume")
        restored = self.checkpoints.restore_latest(self.run.abstract_state, self.config)
        state = _with_opt_state(self.run, restored[0])
        position = self.loader.get_state()
        log(f"{why}: rolled back to step {target}; training continues on the batches after "
            f"them (data position {position['micro_batch']})")
        self.writer.trim(target)
        self.writer.write(target, rollback_from_step=bad_step,
                          nonfinite_steps=self.nonfinite_in_a_row)
        self.rolled_back_to, self.nonfinite_in_a_row = target, 0
        return state

    def _set_horizon(self, horizon: int) -> None:
        """The lr schedule's length (an argument of the compiled step: no recompile)."""
        self.total = horizon
        self.horizon = self.run.horizon(horizon)
        if self.budget is not None:
            self.budget.state.horizon = horizon

    def _evaluate(self, state: TrainState, step: int) -> float:
        """A periodic evaluation on the fixed first eval_batches batches; returns the val loss."""
        self._flush()
        with self.progress.paused():
            result = self.evaluator(eval_params(state.opt_state, state.params),
                                    self.config.run.eval_batches)
        log(f"eval @ {step}: {format_eval(result)}")
        self.writer.write(step, **result, **self.progress.totals(step))
        return result["val_loss"]

    def _save(self, state: TrainState, step: int, val_loss: float | None) -> None:
        """An asynchronous checkpoint of `step` (ranked by val_loss with keep_best)."""
        self._flush()  # logged before the checkpoint, so a resume never repeats it
        metrics = {checkpointing.BEST_METRIC: val_loss} if val_loss is not None else None
        loop_state = {"budget": self.budget.snapshot()} if self.budget is not None else None
        with self.progress.paused():
            self.checkpoints.save(step, state, self.loader.get_state(), self.config,
                                  metrics=metrics, loop_state=loop_state)
        self.last_save = clock()

    def _finish(self, state: TrainState, start: int) -> dict[str, Any]:
        """The final save, the final evaluation (the whole validation set by default), a sample."""
        c = self.config
        final_step = int(jax.device_get(state.step))
        stop_reason = "time budget" if self.total < c.run.iterations and self.budget else (
            "iterations")
        loop_state = {"budget": self.budget.snapshot()} if self.budget is not None else None
        self.checkpoints.save(final_step, state, self.loader.get_state(), c,
                              loop_state=loop_state)
        max_batches = None if c.run.final_full_eval else c.run.eval_batches
        final_params = eval_params(state.opt_state, state.params)  # schedule-free: x, not y
        result = self.evaluator(final_params, max_batches)
        log(f"final eval @ {final_step}: {format_eval(result)}")
        totals = self.progress.totals(final_step)
        self.writer.write(final_step, **{f"final_{k}": v for k, v in result.items()},
                          steps_run=final_step - start, stop_reason=stop_reason, **totals)
        result.update(step=final_step, workdir=c.run.workdir, train_time_s=totals["train_time_s"],
                      steps_run=final_step - start, stop_reason=stop_reason)
        if c.run.sample_tokens > 0 and jax.process_count() > 1:
            log("sample: skipped in multi-process runs (python -m minillm_jax.sample --workdir "
                f"{c.run.workdir} samples from the final checkpoint)")
        elif c.run.sample_tokens > 0:
            from minillm_jax.generation import generate

            text = generate(self.run.model, jax.device_get(final_params), c.run.sample_prompt,
                            max_new_tokens=c.run.sample_tokens,
                            temperature=c.run.sample_temperature, top_k=c.run.sample_top_k,
                            seed=c.run.seed)
            log(f"sample: {text!r}")
            result["sample"] = text
        return result
