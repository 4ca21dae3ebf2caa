"""Run metrics: always appended to <workdir>/metrics.jsonl, mirrored to wandb when enabled."""

from __future__ import annotations

import json
import netrc
import os
import secrets
import string
import sys
import threading
from typing import Any, Callable
from urllib.parse import urlparse

import numpy as np


def _plain(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray)) or hasattr(value, "item"):
        return value.item() if np.ndim(value) == 0 else np.asarray(value).tolist()
    return value


class MetricsWriter:
    """JSONL writer (one object per line, flushed) plus optional wandb.

    wandb never stops a run: with credentials (WANDB_API_KEY, or `wandb login`'s ~/.netrc
    entry) it runs online, without them offline, saying so in one line (WANDB_MODE overrides
    both); if it cannot start, the run continues with the JSONL log only; a failing log or finish
    call is reported and training goes on; a call that hangs (network) is abandoned after
    `TIMEOUT_S` seconds and wandb is off for the rest of the run. The wandb run id is kept in
    <workdir>/wandb_id.txt so a resumed run logs into the same wandb run (wandb.init(id=...,
    resume="allow")). `close(exit_code)` finishes the wandb run with the run's exit code.
    """

    ID_FILE = "wandb_id.txt"
    TIMEOUT_S = 60.0  # the longest a wandb call may hold up training

    def __init__(self, workdir: str, *, enabled: bool = True, wandb: bool = False,
                 config: dict | None = None, project: str = "minillm-jax", name: str = ""):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._file = open(self.path, "a", encoding="utf-8") if enabled else None
        self._wandb_failures = 0
        self._wandb = self._start_wandb(workdir, config or {}, project, name) if (
            wandb and enabled) else None

    @classmethod
    def _start_wandb(cls, workdir: str, config: dict, project: str, name: str):
        try:
            import wandb
        except Exception as err:  # not installed, or broken (e.g. a protobuf mismatch)
            hint = (" (pip install -e '.[wandb]')" if isinstance(err, ImportError) else
                    f" ({type(err).__name__}: {err})")
            _warn(f"wandb cannot be imported{hint}; logging to metrics.jsonl only")
            return None
        id_path = os.path.join(workdir, cls.ID_FILE)
        try:
            run_id = _read_run_id(id_path)
            if run_id is None:  # a new run: its id is kept before wandb starts
                run_id = _new_run_id()
                _write_run_id(id_path, run_id)
            mode = _wandb_mode()
            if mode == "offline":
                why = ("WANDB_MODE=offline" if os.environ.get("WANDB_MODE") else
                       "no wandb credentials: run `wandb login` or set WANDB_API_KEY")
                print(f"wandb: this run is offline ({why}); `wandb sync "
                      f"{os.path.join(workdir, 'wandb')}` uploads it later", flush=True)
            return _bounded(lambda: wandb.init(project=project, name=name or None, id=run_id,
                                               resume="allow", config=config, dir=workdir,
                                               mode=mode), cls.TIMEOUT_S, "wandb.init")
        except Exception as err:  # wandb must never end a training run
            _warn(f"wandb could not start ({type(err).__name__}: {err}); logging to "
                  "metrics.jsonl only")
            return None

    def write(self, step: int, **values: Any) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), **{k: _plain(v) for k, v in values.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._wandb is not None:
            run = self._wandb
            try:
                _bounded(lambda: run.log({k: v for k, v in record.items() if k != "step"},
                                         step=int(step)), self.TIMEOUT_S, "wandb log")
            except _Hung as err:  # never wait on it again
                self._wandb = None
                _warn(f"{err}; wandb is off for the rest of this run, metrics.jsonl has every "
                      "value")
            except Exception as err:  # reported once; wandb is tried again at the next write
                self._wandb_failures += 1
                if self._wandb_failures == 1:
                    _warn(f"wandb log failed at step {step} ({type(err).__name__}: {err}); "
                          "training continues, metrics.jsonl has every value")

    def trim(self, step: int) -> None:
        """Drops the records a run continuing from `step` will write again (a rollback), as on
        resume (minillm_jax.train.rundir.trim_metrics), and keeps appending."""
        if self._file is None:
            return
        from minillm_jax.train.rundir import trim_metrics

        self._file.close()
        trim_metrics(os.path.dirname(self.path), step)
        self._file = open(self.path, "a", encoding="utf-8")

    def close(self, exit_code: int = 0) -> None:
        """Closes the log; finishes the wandb run with `exit_code` (non-zero: it failed)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        run, self._wandb = self._wandb, None
        if run is None:
            return
        if self._wandb_failures > 1:
            _warn(f"wandb: {self._wandb_failures} log calls failed in this run")
        try:
            _bounded(lambda: run.finish(exit_code=exit_code), self.TIMEOUT_S, "wandb finish")
        except Exception as err:
            _warn(f"wandb could not finish the run ({type(err).__name__}: {err}); the "
                  "metrics are in metrics.jsonl")


class _Hung(TimeoutError):
    """A wandb call did not return in time (it goes on in a daemon thread, abandoned)."""


def _bounded(call: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """call() in a daemon thread, waiting at most timeout_s: its result, its exception, or _Hung.
    A daemon thread, so a call that never returns cannot keep the process from exiting."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as err:  # noqa: BLE001 - handed to the caller
            outcome["error"] = err

    thread = threading.Thread(target=target, name=f"minillm-{what}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise _Hung(f"{what} did not return within {timeout_s:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _has_credentials() -> bool:
    """Whether wandb could log in without asking: WANDB_API_KEY, or the ~/.netrc entry that
    `wandb login` writes for its host (WANDB_BASE_URL, api.wandb.ai by default)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
        entry = netrc.netrc(path).authenticators(host or "api.wandb.ai")
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def _wandb_mode() -> str | None:
    """WANDB_MODE when set ("offline" for its "dryrun" alias); else online (None: wandb's
    default) with credentials, offline without."""
    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if mode:
        return "offline" if mode == "dryrun" else mode
    return None if _has_credentials() else "offline"


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _new_run_id() -> str:
    """8 characters of [a-z0-9], like wandb's own run ids."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def _read_run_id(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip() or None
    except FileNotFoundError:
        return None


def _write_run_id(path: str, run_id: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(run_id)
    os.replace(tmp, path)


def read_metrics(path: str) -> list[dict]:
    """Records of a metrics.jsonl file (a directory means <dir>/metrics.jsonl)."""
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.jsonl")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
