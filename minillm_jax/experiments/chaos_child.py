"""The training process of a chaos run (minillm_jax/experiments/chaos.py): the training CLI,
unchanged, plus test-only hooks that environment variables switch on. Training itself never
imports this module.

    python -m minillm_jax.experiments.chaos_child --config configs/demo_2023.py [--config...]

- MINILLM_CHAOS_PHASES=FD: report the moments the parent aims its kills at, one line each on
  pipe FD: `step N` (step N's batch is being read), `eval N` (the periodic evaluation at step N
  starts), `save N` (the asynchronous save of step N started: its files are being written in
  the background). Kills then land at a chosen phase, not by luck.
- MINILLM_CHAOS_ENOSPC=STEP: every JSON file of the checkpoint of STEP fails to write with
  OSError(ENOSPC), in the background writer, as on a full disk.
- MINILLM_CHAOS_SLOW_WRITES=SECONDS: each JSON item of a checkpoint takes SECONDS longer to
  write, so that a kill aimed at a running write lands inside it on any machine (the CI test).
- MINILLM_CHAOS_UNREADABLE=STEP: this process cannot read checkpoint STEP (OSError EIO on its
  read), e.g. one host of a multi-process run that lost its view of the files.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from typing import Any, Sequence

ENV_PHASES = "MINILLM_CHAOS_PHASES"
ENV_ENOSPC = "MINILLM_CHAOS_ENOSPC"
ENV_UNREADABLE = "MINILLM_CHAOS_UNREADABLE"
ENV_SLOW_WRITES = "MINILLM_CHAOS_SLOW_WRITES"
TMP_MARKER = ".orbax-checkpoint-tmp"  # orbax writes <step>.orbax-checkpoint-tmp-*/ first
JSON_ITEMS = ("data", "config", "loop", "fingerprint")  # written as <item>/metadata


def _reporter(fd: int) -> Any:
    def report(phase: str, step: int) -> None:
        try:
            os.write(fd, f"{phase} {int(step)}\n".encode())
        except OSError:  # the parent stopped listening: training goes on
            pass
    return report


def _report_phases(fd: int) -> None:
    from minillm_jax.data import loader as loader_lib
    from minillm_jax.train.loop import TrainLoop
    from minillm_jax.train.run_checkpoints import RunCheckpoints

    report = _reporter(fd)
    next_batch, evaluate, save = (loader_lib.TrainLoader.__next__, TrainLoop._evaluate,
                                  RunCheckpoints.save)

    def reading(self: Any) -> Any:
        report("step", self.next_micro_batch // self.acc_steps + 1)
        return next_batch(self)

    def evaluating(self: Any, state: Any, step: int) -> Any:
        report("eval", step)
        return evaluate(self, state, step)

    def saving(self: Any, step: int, *args: Any, **kwargs: Any) -> bool:
        started = save(self, step, *args, **kwargs)
        if started:
            report("save", step)
        return started

    loader_lib.TrainLoader.__next__ = reading
    TrainLoop._evaluate = evaluating
    RunCheckpoints.save = saving


def _fail_writes_of(step: int) -> None:
    """The JSON items of checkpoint `step` fail to write with ENOSPC (orbax writes each to
    <step>.orbax-checkpoint-tmp*/<item>*/metadata with etils' Path.write_text, in its background
    writer); the arrays are written."""
    from etils import epath

    kind = type(epath.Path("/"))
    write_text = kind.write_text

    def full_disk(self: Any, *args: Any, **kwargs: Any) -> Any:
        parts = self.parts
        if (len(parts) >= 3 and parts[-3].startswith(f"{step}{TMP_MARKER}")
                and parts[-2].split(".")[0] in JSON_ITEMS and parts[-1] == "metadata"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return write_text(self, *args, **kwargs)

    kind.write_text = full_disk


def _slow_writes(seconds: float) -> None:
    """Every JSON item of every checkpoint takes `seconds` longer to write (in orbax's
    background writer): a kill aimed at a running write lands inside it, whatever the load."""
    from etils import epath

    kind = type(epath.Path("/"))
    write_text = kind.write_text

    def slow(self: Any, *args: Any, **kwargs: Any) -> Any:
        parts = self.parts
        if (len(parts) >= 3 and TMP_MARKER in parts[-3]
                and parts[-2].split(".")[0] in JSON_ITEMS and parts[-1] == "metadata"):
            time.sleep(seconds)
        return write_text(self, *args, **kwargs)

    kind.write_text = slow


def _cannot_read(step: int) -> None:
    from minillm_jax.train import run_checkpoints

    read_state = run_checkpoints.read_state

    def unreadable(manager: Any, at: int, abstract_state: Any) -> Any:
        if int(at) == step:
            raise OSError(errno.EIO, os.strerror(errno.EIO),
                          os.path.join(str(manager.directory), str(at)))
        return read_state(manager, at, abstract_state)

    run_checkpoints.read_state = unreadable


def install() -> None:
    """Installs the hooks the environment asks for."""
    if os.environ.get(ENV_PHASES):
        _report_phases(int(os.environ[ENV_PHASES]))
    if os.environ.get(ENV_ENOSPC):
        _fail_writes_of(int(os.environ[ENV_ENOSPC]))
    if os.environ.get(ENV_SLOW_WRITES):
        _slow_writes(float(os.environ[ENV_SLOW_WRITES]))
    if os.environ.get(ENV_UNREADABLE):
        _cannot_read(int(os.environ[ENV_UNREADABLE]))


def main(argv: Sequence[str] | None = None) -> int:
    install()
    from minillm_jax.main import main as train_main

    return train_main(argv)


if __name__ == "__main__":
    sys.exit(main())
