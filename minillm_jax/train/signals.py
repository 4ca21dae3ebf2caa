"""Stopping a run cleanly on SIGTERM / SIGINT (preemption, Ctrl-C): save, then exit."""

from __future__ import annotations

import signal
import threading
from typing import Any

import jax


class StopSignals:
    """Turns the first SIGTERM / SIGINT into a request to save and stop (`.received` names it);
    a second one of the same kind acts as usual (kills / KeyboardInterrupt). Installs nothing
    outside the main thread.

    Multi-process runs must stop at the same step everywhere: there the Python handlers are not
    installed and `should_stop` asks JAX's preemption sync point instead (the distributed
    runtime's SIGTERM notice; every process calls it at every step)."""

    SIGNALS = ("SIGTERM", "SIGINT")

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}
        self._multihost = False

    def _handle(self, signum: int, frame: Any) -> None:
        # No printing here: the handler may interrupt a print of the main thread.
        self.received = signal.Signals(signum).name
        previous = self._previous.get(signum)
        signal.signal(signum, previous if previous is not None else signal.SIG_DFL)

    def should_stop(self, step: int) -> bool:
        if self._multihost and self.received is None:
            from jax.experimental import multihost_utils

            try:
                if multihost_utils.reached_preemption_sync_point(step):
                    self.received = "preemption"
            except Exception:  # noqa: BLE001 - no preemption service (not initialised)
                self._multihost = False
        return self.received is not None

    def __enter__(self) -> "StopSignals":
        if jax.process_count() > 1:
            self._multihost = True
        elif threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                signum = getattr(signal, name)
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}
