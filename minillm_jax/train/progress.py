"""Training progress: each step's metrics read one step late, printed and recorded every log_freq.

The host reads step N's metrics only after step N+1 has been dispatched, so it never waits on
the step it just launched (the device always has work queued).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator

import jax

from minillm_jax.train import mfu
from minillm_jax.train.metrics import MetricsWriter

LOGGED = ("loss", "lr", "grad_norm", "skipped")  # always in a train step's metrics


def log(message: str) -> None:
    """Prints on the first process only."""
    if jax.process_index() == 0:
        print(message, flush=True)


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class Progress:
    """Tracks tokens/s, ETA and training time (evaluations excluded) and logs train metrics."""

    def __init__(self, writer: MetricsWriter, *, log_freq: int, tokens_per_step: int,
                 flops_per_token: float, peak: mfu.Peak | None = None, devices: int = 1):
        """`peak`: one device's peak FLOP/s (minillm_jax.train.mfu.device_peak); with None or an
        unknown peak the log says "MFU n/a" once and leaves MFU out."""
        self.writer, self.log_freq = writer, log_freq
        self.tokens_per_step, self.flops_per_token = tokens_per_step, flops_per_token
        self.peak, self.devices = peak if peak is not None else mfu.Peak(None, "no peak"), devices
        self.pending: tuple[int, dict[str, Any]] | None = None  # (step, device metrics)
        self._window_start, self._window_steps = time.perf_counter(), 0
        self._train_time_s = 0.0  # closed windows
        # steps whose update was skipped (non-finite) in the run's trajectory: saved with each
        # checkpoint and restored on resume and rollback (the trainer sets it)
        self.skipped_steps = 0

    @property
    def train_time_s(self) -> float:
        """Wall-clock seconds spent training so far (evaluations and saves excluded)."""
        return self._train_time_s + time.perf_counter() - self._window_start

    def totals(self, step: int) -> dict[str, float]:
        """Training FLOPs and time at `step` (steps done), for eval records (the train records of
        the same step hold its tokens)."""
        return {"flops": step * self.tokens_per_step * self.flops_per_token,
                "train_time_s": self.train_time_s}

    def push(self, step: int, metrics: dict[str, Any], total: int,
             ) -> tuple[int, dict[str, float]] | None:
        """Queues step `step`'s (device) metrics after reporting the previous step's, whose
        (step, values) it returns (None for the first)."""
        reported = self.flush(total)
        self.pending = (step, metrics)
        return reported

    def drop(self) -> bool:
        """Forgets the queued step (its state was discarded: a rollback); returns whether there
        was one."""
        dropped, self.pending = self.pending is not None, None
        return dropped

    def flush(self, total: int) -> tuple[int, dict[str, float]] | None:
        """Reports the queued step, if any, and returns its (step, values)."""
        if self.pending is None:
            return None
        step, metrics = self.pending
        self.pending = None
        values = {k: float(v) for k, v in jax.device_get(metrics).items()}
        self._window_steps += 1
        done = step + 1
        if values["skipped"]:
            self.skipped_steps += 1
            log(f"step {done}: loss {values['loss']}, grad norm {values['grad_norm']}: not "
                "finite, update skipped")
        if done % self.log_freq and done != total:
            return step, values
        now = time.perf_counter()
        elapsed = now - self._window_start
        self._train_time_s += elapsed
        rate = self._window_steps * self.tokens_per_step / max(elapsed, 1e-9)
        step_time = elapsed / max(self._window_steps, 1)
        utilisation = mfu.mfu(rate, self.flops_per_token, self.peak.flops, self.devices)
        log(f"step {done}/{total} | loss {values['loss']:.4f} | lr {values['lr']:.2e} | "
            f"{rate:,.0f} tok/s | {1000 * step_time:.0f} ms/step | "
            + (f"MFU {100 * utilisation:.1f}% | " if utilisation is not None else "")
            + f"ETA {format_duration((total - done) * step_time)}")
        extra = {k: v for k, v in values.items() if k not in LOGGED}
        if utilisation is not None:
            extra["mfu"] = utilisation
        self.writer.write(done, train_loss=values["loss"], lr=values["lr"],
                          grad_norm=values["grad_norm"], tokens_per_s=rate,
                          step_time_s=step_time, tokens=done * self.tokens_per_step,
                          skipped_steps=self.skipped_steps, **extra)
        self._window_start, self._window_steps = now, 0
        return step, values

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent inside (an evaluation, a save) counts neither in tokens/s nor train time."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self._window_start += time.perf_counter() - start

