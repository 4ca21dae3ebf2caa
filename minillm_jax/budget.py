"""A wall-clock budget for a run (config.budget_minutes), with the lr schedule's horizon in time."""

from __future__ import annotations

import time

from minillm_jax import data
from minillm_jax.config import TrainConfig


class TimeBudget:
    """The run stops when the budget minus a reserve for the final evaluation and save is spent.

    After `budget_warmup_steps` steps it measures wall time per step (evaluations included) and
    sets the schedule's horizon to the steps that fit; it keeps re-measuring at every
    `log_freq`-th step and moves the horizon again when the estimate drifts by more than
    `budget_tolerance`, so the decay ends at the budget. No llm-baselines option does this.
    """

    def __init__(self, config: TrainConfig, compile_s: float):
        run, d = config.run, config.data
        self.run = run
        self.started = time.perf_counter()
        self.horizon_steps = run.iterations
        full_batches = data.num_val_batches(d.data_dir, batch_size=d.eval_batch_size,
                                            seq_len=config.model.sequence_length)
        eval_batches = full_batches if run.final_full_eval else min(full_batches,
                                                                    run.eval_batches)
        # The final eval costs about eval_batches forward passes of one step's micro-batch
        # (a third of a training step each); this bound is refined by measurement below.
        self.eval_share = eval_batches * d.eval_batch_size / max(
            3 * d.batch_size * d.acc_steps, 1)
        self.step_time_s = 0.0
        self.reserve_s = 0.02 * 60 * run.budget_minutes
        self._resized = 0
        self.compile_s = compile_s  # cost of one compile, updated when one happens
        self._mark_time, self._mark_steps = self.started, 0

    def expired(self) -> bool:
        deadline = self.started + 60 * self.run.budget_minutes - self.reserve_s
        return time.perf_counter() >= deadline

    def horizon(self, start: int, steps_done: int) -> int | None:
        """A new schedule horizon (total steps) when it should move, else None."""
        run = self.run
        warmup = run.budget_warmup_steps
        if steps_done < warmup or (steps_done > warmup and steps_done % run.log_freq):
            return None
        now = time.perf_counter()
        elapsed = now - self.started
        if steps_done - self._mark_steps < warmup:
            return None
        # wall time per step since the last horizon change (recompiles excluded, reacts to drift)
        self.step_time_s = (now - self._mark_time) / (steps_done - self._mark_steps)
        self.reserve_s = max(5.0, 2.0 * self.eval_share * self.step_time_s + 5.0)
        left = 60 * run.budget_minutes - self.reserve_s - elapsed

        def steps_that_fit(seconds: float) -> int:
            return min(start + steps_done + max(int(seconds / self.step_time_s), 1),
                       run.iterations)

        # Is the current horizon still right (ignoring a recompile we would not do)?
        drift = abs(steps_that_fit(left) - self.horizon_steps) / max(self.horizon_steps, 1)
        if drift <= run.budget_tolerance or self._resized >= 8:
            return None
        left -= self.compile_s  # moving the horizon costs a recompile, paid from the budget
        if left < self.compile_s:  # too late for a recompile to pay for itself
            return None
        fits = steps_that_fit(left)
        self._resized += 1
        self.horizon_steps = fits
        return fits

    def mark(self, steps_done: int) -> None:
        """Restart the step-time measurement (after a recompile)."""
        self._mark_time, self._mark_steps = time.perf_counter(), steps_done
