"""A wall-clock budget for a run (config.budget_minutes), with the lr schedule's horizon in time.

The clock. Budget time starts when `train()` starts (compiling, restoring and setting up the
data count) and runs through evaluations and saves. A checkpoint records the budget time used so
far and the horizon; a resumed run continues from those, plus its own set-up time. Time the
killed process spent after its last checkpoint is not counted: those steps are run again.

The horizon. After `budget_warmup_steps` steps the budget measures wall time per step (the
window since the last horizon change, evaluations and saves included) and sets the schedule's
horizon to the steps that fit; it re-measures every `log_freq` steps and moves the horizon again
when the estimate drifts by more than `budget_tolerance`, so the decay ends at the budget. The
horizon is an argument of the compiled step: moving it costs nothing. No llm-baselines option
does this.

Everything the decisions depend on is in `BudgetState`, saved with each checkpoint, so a resumed
run makes the decisions the uninterrupted run would have made with the same timings.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from minillm_jax import data
from minillm_jax.config import TrainConfig

@dataclasses.dataclass
class BudgetState:
    """The budget's bookkeeping, in budget seconds (see the module docstring)."""

    horizon: int
    elapsed_s: float = 0.0  # budget time used before the current session started
    moves: int = 0
    mark_elapsed_s: float = -1.0  # start of the current step-time window (-1: not started)
    mark_step: int = 0
    step_time_s: float = 0.0
    reserve_s: float = 0.0


class TimeBudget:
    """Decides when a budgeted run stops and where its lr schedule ends."""

    def __init__(self, config: TrainConfig, clock: Callable[[], float], session_start: float,
                 saved: dict[str, Any] | None = None):
        run, d = config.run, config.data
        self.run, self.clock, self.session_start = run, clock, session_start
        self.state = (BudgetState(**saved) if saved else
                      BudgetState(horizon=run.iterations, reserve_s=0.02 * 60 * run.budget_minutes))
        full_batches = data.num_val_batches(d.data_dir, batch_size=d.eval_batch_size,
                                            seq_len=config.model.sequence_length)
        eval_batches = full_batches if run.final_full_eval else min(full_batches,
                                                                    run.eval_batches)
        # The final eval costs about eval_batches forward passes of one step's micro-batch
        # (a third of a training step each); this bound is refined by measurement below.
        self.eval_share = eval_batches * d.eval_batch_size / max(
            3 * d.batch_size * d.acc_steps, 1)

    def elapsed(self) -> float:
        """Budget seconds used so far, this session included."""
        return self.state.elapsed_s + self.clock() - self.session_start

    def snapshot(self) -> dict[str, Any]:
        """The state to save with a checkpoint taken now."""
        return dataclasses.asdict(dataclasses.replace(self.state, elapsed_s=self.elapsed()))

    def start(self, step: int) -> None:
        """Opens the first step-time window at the first step a fresh run takes (compile and
        set-up excluded); a resumed run keeps the window it saved."""
        if self.state.mark_elapsed_s < 0:
            self.mark(step)

    def expired(self) -> bool:
        return self.elapsed() >= 60 * self.run.budget_minutes - self.state.reserve_s

    def new_horizon(self, step: int) -> int | None:
        """A new schedule horizon (total steps) when it should move at `step`, else None."""
        s, run = self.state, self.run
        since = step - s.mark_step
        warmup = run.budget_warmup_steps
        if since < warmup or (since > warmup and step % run.log_freq):
            return None
        elapsed = self.elapsed()
        s.step_time_s = (elapsed - s.mark_elapsed_s) / since
        s.reserve_s = max(5.0, 2.0 * self.eval_share * s.step_time_s + 5.0)
        left = 60 * run.budget_minutes - s.reserve_s - elapsed

        def steps_that_fit(seconds: float) -> int:
            return min(step + max(int(seconds / max(s.step_time_s, 1e-9)), 1), run.iterations)

        fits = steps_that_fit(left)
        if abs(fits - s.horizon) <= run.budget_tolerance * max(s.horizon, 1):
            return None
        s.moves += 1
        s.horizon = fits
        return fits

    def mark(self, step: int) -> None:
        """Starts a new step-time window at `step`."""
        self.state.mark_elapsed_s, self.state.mark_step = self.elapsed(), step
