"""Run metrics: always appended to <workdir>/metrics.jsonl, mirrored to wandb when enabled."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np


def _plain(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray)) or hasattr(value, "item"):
        return value.item() if np.ndim(value) == 0 else np.asarray(value).tolist()
    return value


class MetricsWriter:
    """JSONL writer (one object per line, flushed) plus optional wandb.

    wandb never stops a run: without an API key it runs offline; if it cannot start at all the
    run continues with the JSONL log only. The wandb run id is kept in the workdir so a resumed
    run logs into the same wandb run.
    """

    def __init__(self, workdir: str, *, enabled: bool = True, wandb: bool = False,
                 config: dict | None = None, project: str = "minillm-jax", name: str = ""):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._file = open(self.path, "a", encoding="utf-8") if enabled else None
        self._wandb = self._start_wandb(workdir, config or {}, project, name) if (
            wandb and enabled) else None

    @staticmethod
    def _start_wandb(workdir: str, config: dict, project: str, name: str):
        try:
            import wandb
        except ImportError:
            print("wandb is not installed (pip install -e '.[wandb]'); logging to metrics.jsonl "
                  "only", file=sys.stderr)
            return None
        id_path = os.path.join(workdir, "wandb_id.txt")
        if os.path.exists(id_path):
            run_id = open(id_path).read().strip()
        else:
            run_id = wandb.util.generate_id()
            with open(id_path, "w") as f:
                f.write(run_id)
        mode = None if (os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE")) else "offline"
        try:
            return wandb.init(project=project, name=name or None, id=run_id, resume="allow",
                              config=config, dir=workdir, mode=mode)
        except Exception as err:  # wandb must never end a training run
            print(f"wandb could not start ({err}); logging to metrics.jsonl only", file=sys.stderr)
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
            except Exception as err:
                print(f"wandb log failed ({err}); continuing", file=sys.stderr)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._wandb is not None:
            self._wandb.finish()


def read_metrics(path: str) -> list[dict]:
    """Records of a metrics.jsonl file (a directory means <dir>/metrics.jsonl)."""
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.jsonl")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
