"""Run metrics: always appended to <workdir>/metrics.jsonl, mirrored to wandb when enabled."""

from __future__ import annotations

import json
import os
import secrets
import string
import sys
from typing import Any

import numpy as np


def _plain(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray)) or hasattr(value, "item"):
        return value.item() if np.ndim(value) == 0 else np.asarray(value).tolist()
    return value


class MetricsWriter:
    """JSONL writer (one object per line, flushed) plus optional wandb.

    wandb never stops a run: without an API key (or WANDB_MODE) it runs offline; if it cannot
    start, the run continues with the JSONL log only; a failing log or finish call is reported
    and training goes on. The wandb run id is kept in <workdir>/wandb_id.txt so a resumed run
    logs into the same wandb run (wandb.init(id=..., resume="allow")).
    """

    ID_FILE = "wandb_id.txt"

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
            mode = None if (os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE")) \
                else "offline"
            return wandb.init(project=project, name=name or None, id=run_id, resume="allow",
                              config=config, dir=workdir, mode=mode)
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
            try:
                self._wandb.log({k: v for k, v in record.items() if k != "step"}, step=int(step))
            except Exception as err:  # reported once; wandb is tried again at the next write
                self._wandb_failures += 1
                if self._wandb_failures == 1:
                    _warn(f"wandb log failed at step {step} ({type(err).__name__}: {err}); "
                          "training continues, metrics.jsonl has every value")

    def trim(self, step: int) -> None:
        """Drops the records a run continuing from `step` will write again (a rollback), as on
        resume (minillm_jax.rundir.trim_metrics), and keeps appending."""
        if self._file is None:
            return
        from minillm_jax.rundir import trim_metrics

        self._file.close()
        trim_metrics(os.path.dirname(self.path), step)
        self._file = open(self.path, "a", encoding="utf-8")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        run, self._wandb = self._wandb, None
        if run is None:
            return
        if self._wandb_failures > 1:
            _warn(f"wandb: {self._wandb_failures} log calls failed in this run")
        try:
            run.finish()
        except Exception as err:
            _warn(f"wandb could not finish the run ({type(err).__name__}: {err}); the "
                  "metrics are in metrics.jsonl")


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
