"""The TrainLoop of one run: train step, maybe evaluate, maybe save, log (metrics read one step
late), with the guard against non-finite steps and the rollback to the last known good
checkpoint. minillm_jax.train.trainer builds the run and drives this loop.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable

import jax

from minillm_jax.train import checkpointing
from minillm_jax.train.run_checkpoints import RunCheckpoints
from minillm_jax.train import distributed
from minillm_jax.train import rundir
from minillm_jax.train.budget import TimeBudget
from minillm_jax.train.build import Run
from minillm_jax.train.evaluator import Evaluator, format_eval
from minillm_jax.train.metrics import MetricsWriter
from minillm_jax.train.mfu import device_peak, model_flops_per_token
from minillm_jax.optim import eval_params, plateau_observe
from minillm_jax.train.progress import Progress, log
from minillm_jax.train.sharding import to_global
from minillm_jax.train.signals import StopSignals
from minillm_jax.train.step import TrainState

class TrainingError(RuntimeError):
    """The run cannot continue (e.g. its loss stays NaN); the message says what was kept."""



def with_opt_state(run: Run, state: TrainState) -> TrainState:
    """A params-only checkpoint (e.g. imported weights) starts a fresh optimizer state."""
    if state.opt_state is not None:
        return state
    return state.replace(opt_state=jax.jit(
        run.tx.init, out_shardings=run.state_shardings.opt_state)(state.params))


class _RollBack(Exception):
    """Too many non-finite steps in a row: go back to the last known good checkpoint."""

    def __init__(self, step: int, what: str):
        super().__init__(step, what)
        self.step, self.what = step, what


def _what_went_nonfinite(loss: float, grad_norm: float) -> str:
    """Names the quantity of a skipped step that was not finite: the loss, else the gradient
    norm (a finite loss can have overflowing gradients, e.g. with an absurd learning rate)."""
    if not math.isfinite(loss):
        return f"the loss became {loss}"
    return f"the gradient norm became {grad_norm} (loss {loss:.4g})"


@dataclasses.dataclass
class TrainLoop:
    """One run's loop: train step, maybe evaluate, maybe save, log (one step late).

    Non-finite steps (their updates are skipped by the step itself) are counted; once
    `nonfinite_rollback_after` come in a row the loop rolls back to the last known good
    checkpoint. A checkpoint becomes known good once `nonfinite_rollback_after` finite steps
    followed it (or, for the final one, a finite final evaluation): a checkpoint saved right
    after an update that ruined the parameters is never a rollback target. No checkpoint is
    saved while non-finite steps go on. The good step is protected from rotation and recorded in
    <workdir>/good_checkpoint.json, so a later run rolls back to it too.
    """

    run: Run
    evaluator: Evaluator
    checkpoints: RunCheckpoints
    loader: Any  # minillm_jax.data.TrainLoader
    writer: MetricsWriter
    budget: TimeBudget | None
    clock: Callable[[], float]  # wall-clock seconds (trainer.clock: tests substitute a fake one)

    def __post_init__(self) -> None:
        c = self.run.config
        self.config = c
        peak = device_peak(jax.devices()[0])
        flops = model_flops_per_token(self.run.abstract_state.params, c.model)
        log(f"{flops / 1e9:.3g} GFLOP per token (minillm_jax/train/mfu.py); "
            + (f"MFU against {peak.flops * jax.device_count() / 1e12:,.0f} TFLOP/s "
               f"({jax.device_count()} x {peak.source})" if peak.flops is not None else
               f"MFU n/a: {peak.source}"))
        self.progress = Progress(self.writer, log_freq=c.run.log_freq,
                                 tokens_per_step=c.tokens_per_step, flops_per_token=flops,
                                 peak=peak, devices=jax.device_count())
        self.total = c.run.iterations  # the schedule's horizon: the budget may move it
        self.nonfinite_in_a_row = 0
        self.finite_in_a_row = 0
        self.finite_since_rollback = 0
        self.last_loss = float("nan")
        self.last_grad_norm = float("nan")
        self.save_skipped = False  # a save was skipped in the current non-finite streak
        self.rolled_back_to: int | None = None
        self.good: int | None = None  # the last known good checkpoint: the rollback target
        self.unconfirmed: list[int] = []  # checkpoints saved since, not yet known good
        self.last_save = self.clock()

    def begin(self, good: int | None, start: int, skipped_steps: int = 0) -> None:
        """The session starts at checkpoint `start` (0: fresh) with `good` the last known good
        checkpoint; `skipped_steps` is the count saved with `start`."""
        self._mark_good(good)
        if start and start != good:
            self.unconfirmed = [start]
        self.progress.skipped_steps = skipped_steps

    def _mark_good(self, step: int | None) -> None:
        self.good = step
        self.checkpoints.protect(step)
        rundir.write_good_step(self.config.run.workdir, step)

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
                if self.nonfinite_in_a_row:  # the run ends inside a streak: never save it
                    raise _RollBack(int(jax.device_get(state.step)),
                                    _what_went_nonfinite(self.last_loss, self.last_grad_norm))
                break
            except _RollBack as rollback:
                state = self._roll_back(rollback.step, rollback.what)
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
            saved = False
            if not is_last and (stopping or val_loss is not None and c.keep_best
                                or self._save_due(step)):
                saved = self._save(state, step, val_loss if c.keep_best else None)
            if stopping:  # SIGTERM / SIGINT: the checkpoint of this step is being written
                self.checkpoints.wait()
                newest = self.checkpoints.latest_step()
                where = (f"with a checkpoint in {rundir.step_dir(c.workdir, step)}" if saved else
                         "without a checkpoint (non-finite steps were going on); the newest "
                         f"checkpoint is step {newest}" if newest is not None else
                         "without a checkpoint (non-finite steps were going on)")
                log(f"{stop.received}: stopped at step {step}/{self.total} {where}; run the "
                    "same command again to resume")
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
        late = self.clock() - self.last_save >= 60 * c.save_every_minutes
        return bool(distributed.agree(int(late))[0])

    def _watch(self, reported: tuple[int, dict[str, float]] | None) -> None:
        """Counts non-finite steps in a row (their updates were skipped by the step itself) and
        finite ones (which confirm the checkpoints before them as good)."""
        if reported is None:
            return
        step, values = reported
        self.last_loss, self.last_grad_norm = values["loss"], values["grad_norm"]
        if values["skipped"]:
            self.nonfinite_in_a_row += 1
            self.finite_in_a_row = 0
            # saved before this step with too few finite steps after them: never good
            self.unconfirmed = [s for s in self.unconfirmed if s > step]
        else:
            self.nonfinite_in_a_row = 0
            self.save_skipped = False
            self.finite_in_a_row += 1
            self.finite_since_rollback += 1
            self._confirm(step)
        if self.nonfinite_in_a_row >= self.config.run.nonfinite_rollback_after:
            raise _RollBack(step + 1, _what_went_nonfinite(values["loss"], values["grad_norm"]))

    def _confirm(self, step: int) -> None:
        """After finite update `step` (from state.step == step): the newest checkpoint followed
        by at least nonfinite_rollback_after finite updates becomes the last known good one."""
        need = self.config.run.nonfinite_rollback_after
        ready = [s for s in self.unconfirmed
                 if step - s + 1 >= need and self.finite_in_a_row >= step - s + 1]
        if ready:
            newest = max(ready)
            self.unconfirmed = [s for s in self.unconfirmed if s > newest]
            self._mark_good(newest)

    def _flush(self) -> None:
        self._watch(self.progress.flush(self.total))

    def _roll_back(self, bad_step: int, what: str) -> TrainState:
        """Back to the last known good checkpoint, keeping the data position: the batches that
        produced the non-finite steps (and the finite ones since that checkpoint) are skipped,
        PaLM's practice; the batch already dispatched after the last bad step is kept.
        Checkpoints newer than the target (never confirmed good) are moved to
        <workdir>/checkpoints_discarded. A second rollback to the same checkpoint, one with no
        finite step since the previous rollback, or none to go back to, stops the run."""
        c = self.config.run
        dispatched = self.progress.drop()
        self.checkpoints.wait()
        why = (f"{what} at step {bad_step}: {self.nonfinite_in_a_row} steps in a "
               "row with a non-finite loss or gradient norm")
        target = self.good
        if target is None:
            moved = self.checkpoints.discard_after(None)
            note = (f" ({len(moved)} checkpoint(s) saved without enough finite steps after "
                    f"them were moved to {os.path.dirname(moved[0])}; none is left to resume "
                    "from)" if moved else "")
            raise TrainingError(f"{why} and there is no checkpoint to roll back to: stopping"
                                f"{note}. Lower lr, enable grad_clip, or set save_every")
        again = target == self.rolled_back_to
        if again or (self.rolled_back_to is not None and self.finite_since_rollback == 0):
            self.checkpoints.discard_after(target)
            since = (f"again after rolling back to step {target}" if again else
                     f"with no finite step since rolling back to step {self.rolled_back_to}")
            raise TrainingError(
                f"{why}, {since}: stopping; checkpoints are kept in "
                f"{rundir.checkpoint_dir(c.workdir)} (newest: step {target}, the last known "
                "good one). Lower lr or enable grad_clip, then rerun to resume")
        self.checkpoints.discard_after(target)
        restored = self.checkpoints.restore_newest(self.run.abstract_state, self.config,
                                                   at_most=target)
        if restored is None:
            raise TrainingError(f"{why} and the checkpoint to roll back to (step {target}) is "
                                "gone: stopping. Lower lr or enable grad_clip, then rerun")
        state = with_opt_state(self.run, restored.state)
        target = restored.step  # an older one if the target was unreadable
        if target != self.good:
            self._mark_good(target)
        if dispatched:  # keep the batch dispatched after the last bad step: it is not a bad one
            position = self.loader.get_state()
            position["micro_batch"] -= self.config.data.acc_steps
            self.loader.set_state(position)
        position = self.loader.get_state()
        log(f"{why}: rolled back to step {target}; training continues on the batches after "
            f"the bad ones (data position {position['micro_batch']})")
        self.writer.trim(target)
        self.writer.write(target, rollback_from_step=bad_step,
                          nonfinite_steps=self.nonfinite_in_a_row)
        self.progress.skipped_steps = int((restored.loop_state or {}).get(
            "skipped_steps", self.progress.skipped_steps))
        self.rolled_back_to, self.nonfinite_in_a_row = target, 0
        self.finite_in_a_row = self.finite_since_rollback = 0
        self.unconfirmed = []
        self.last_save = self.clock()
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

    def _loop_state(self) -> dict[str, Any]:
        """What the loop keeps in a checkpoint besides the arrays and the data position."""
        state: dict[str, Any] = {"skipped_steps": self.progress.skipped_steps}
        if self.budget is not None:
            state["budget"] = self.budget.snapshot()
        return state

    def _save(self, state: TrainState, step: int, val_loss: float | None) -> bool:
        """An asynchronous checkpoint of `step` (ranked by val_loss with keep_best). None while
        non-finite steps go on or after a non-finite evaluation: the state might be ruined, and
        must not become a resume point. Returns whether a save started."""
        self._flush()  # logged before the checkpoint, so a resume never repeats it
        if self.nonfinite_in_a_row or (val_loss is not None and not math.isfinite(val_loss)):
            if not self.save_skipped:  # once per streak
                self.save_skipped = True
                log(f"step {step}: no checkpoint saved (the last step or evaluation was not "
                    "finite); none until the steps are finite again")
            return False
        metrics = {checkpointing.BEST_METRIC: val_loss} if val_loss is not None else None
        with self.progress.paused():
            saved = self.checkpoints.save(step, state, self.loader.get_state(), self.config,
                                          metrics=metrics, loop_state=self._loop_state())
        if saved:
            self.unconfirmed.append(step)
        # the save started now; it is on disk about a second later (docs/checkpoints.md)
        self.last_save = self.clock()
        return saved

    def _finish(self, state: TrainState, start: int) -> dict[str, Any]:
        """The final save, the final evaluation (the whole validation set by default), a sample."""
        c = self.config
        final_step = int(jax.device_get(state.step))
        stop_reason = "time budget" if self.total < c.run.iterations and self.budget else (
            "iterations")
        with self.progress.paused():  # train_time_s counts neither the save nor the evaluation
            saved = self.checkpoints.save(final_step, state, self.loader.get_state(), c,
                                          loop_state=self._loop_state())
            max_batches = None if c.run.final_full_eval else c.run.eval_batches
            final_params = eval_params(state.opt_state, state.params)  # schedule-free: x, not y
            result = self.evaluator(final_params, max_batches)
        if saved:
            self.unconfirmed.append(final_step)
        log(f"final eval @ {final_step}: {format_eval(result)}")
        if final_step in self.unconfirmed and math.isfinite(result["val_loss"]):
            self.checkpoints.wait()  # on disk before it is named good
            self._mark_good(final_step)  # its own finite evaluation confirms it
        totals = self.progress.totals(final_step)
        self.writer.write(final_step, **{f"final_{k}": v for k, v in result.items()},
                          steps_run=final_step - start, stop_reason=stop_reason, **totals)
        result.update(step=final_step, workdir=c.run.workdir, train_time_s=totals["train_time_s"],
                      steps_run=final_step - start, stop_reason=stop_reason)
        if c.run.sample_tokens > 0 and jax.process_count() > 1:
            log("sample: skipped in multi-process runs (python -m minillm_jax.sample --workdir "
                f"{c.run.workdir} samples from the final checkpoint)")
        elif c.run.sample_tokens > 0:
            from minillm_jax.model.generation import generate

            text = generate(self.run.model, jax.device_get(final_params), c.run.sample_prompt,
                            max_new_tokens=c.run.sample_tokens,
                            temperature=c.run.sample_temperature, top_k=c.run.sample_top_k,
                            seed=c.run.seed)
            log(f"sample: {text!r}")
            result["sample"] = text
        return result
