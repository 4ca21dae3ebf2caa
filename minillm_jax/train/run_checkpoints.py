"""The trainer's view of a run's checkpoints: save on its schedule, resume with fallback past
unreadable checkpoints (one decision for all processes, before anything is moved), refuse a
checkpoint saved for another model, report write errors with the checkpoints that are kept, and
protect a last known good step that rotation never deletes (the rollback target).
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from typing import Any

import jax
import orbax.checkpoint as ocp

from minillm_jax.config import TrainConfig
from minillm_jax.train import distributed
from minillm_jax.train.checkpointing import (KeepSteps, Restored, check_compatible, describe,
                                             make_manager, present_items, read_state, save,
                                             verify_state)
from minillm_jax.train.integrity import CheckpointError, CheckpointWarning
from minillm_jax.train.rundir import DISCARDED_DIR, UNREADABLE_DIR, checkpoint_dir, step_dir

class RunCheckpoints:
    """The checkpoints of one training run: resume, periodic and final saves, error reporting,
    and `protected`: steps rotation never deletes (the trainer's last known good checkpoint)."""

    def __init__(self, workdir: str, *, keep: int = 3, keep_best: bool = False,
                 async_save: bool = True):
        self.workdir, self.directory = workdir, checkpoint_dir(workdir)
        self.protected = KeepSteps()
        try:
            self.manager = make_manager(workdir, keep=keep, async_save=async_save,
                                        keep_best=keep_best, cleanup_tmp=True,
                                        protected=self.protected)
        except OSError as err:
            raise CheckpointError(f"cannot use {self.directory} for checkpoints "
                                  f"({describe(err)})") from None
        self.keep_best = keep_best
        self.pending: int | None = None  # step of the save still being written
        self.failed = False  # a write error was reported (the run stops)
        self.blocking_s: list[float] = []  # time each save() held up training

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def protect(self, step: int | None) -> None:
        """Keeps `step` (and no other protected step) through rotation; None protects none."""
        self.protected.steps.clear()
        if step is not None:
            self.protected.steps.add(int(step))

    def _write_error(self, step: int | None, err: BaseException) -> CheckpointError:
        try:
            self.manager.reload()
        except Exception:  # noqa: BLE001 - the report matters more than the listing
            pass
        kept = self.steps()
        resume = (f"rerun the same command to resume from step {kept[-1]}" if kept else
                  "rerun the same command to start again")
        return CheckpointError(
            f"{'a checkpoint' if step is None else f'the checkpoint for step {step}'} could not "
            f"be written to {self.directory} "
            f"({describe(err)}; {self._free_space()}); the run stopped. Checkpoints kept: "
            f"{', '.join(map(str, kept)) or 'none'}. Free disk space or fix the directory, then "
            f"{resume}")

    def _free_space(self) -> str:
        """The free space where the checkpoints go (a full disk is the usual write error)."""
        try:
            free = shutil.disk_usage(self.directory).free
        except OSError:
            return "free space unknown"
        return f"{free / 2**20:,.1f} MiB free there"

    def wait(self) -> None:
        """Blocks until the pending save is on disk; raises CheckpointError if it failed."""
        try:
            self.manager.wait_until_finished()
        except Exception as err:  # noqa: BLE001 - orbax re-raises the writer thread's error
            step, self.pending = self.pending, None
            if self.failed and step is None:
                return  # the failure of a save already reported, raised again by orbax
            self.failed = True
            raise self._write_error(step, err) from err
        self.pending = None

    def save(self, step: int, state: Any, data_state: dict | None,
             config: TrainConfig, metrics: dict | None = None,
             loop_state: dict | None = None) -> bool:
        """Starts an asynchronous save of `step` (False if that step is already saved)."""
        self.wait()  # a failure of the previous save is reported for its own step
        if step in self.manager.all_steps():
            return False
        if self.keep_best and metrics is None:
            metrics = {}  # ranked last by keep_best (and no orbax warning about missing metrics)
        start = time.perf_counter()
        try:
            save(self.manager, step, state, data_state, config, metrics, loop_state)
        except Exception as err:  # noqa: BLE001 - directory creation, serialization, ...
            self.failed = True
            raise self._write_error(step, err) from err
        self.blocking_s.append(time.perf_counter() - start)
        self.pending = step
        return True

    def loop_state(self, step: int) -> dict | None:
        """The loop state saved with `step` (None if it has none)."""
        if "loop" not in present_items(self.manager, step):
            return None
        restored = self.manager.restore(step, args=ocp.args.Composite(
            loop=ocp.args.JsonRestore()))
        return restored["loop"]

    def _move(self, step: int, into: str) -> str:
        """Moves checkpoint `step` to <workdir>/<into>/<step>-<time> (process 0 moves; every
        process waits for it); returns the new path."""
        source = step_dir(self.workdir, step)
        target = os.path.join(os.path.dirname(self.directory), into,
                              f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
        if jax.process_index() == 0:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.move(source, target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"minillm_checkpoint_move_{into}_{step}")
        return target

    def discard_after(self, step: int | None) -> list[str]:
        """Moves every checkpoint newer than `step` (all with None) to <workdir>/
        checkpoints_discarded (not deleted): checkpoints of a trajectory a rollback abandoned,
        never confirmed good. Returns where they went."""
        self.wait()
        moved = [self._move(s, DISCARDED_DIR) for s in self.steps()
                 if step is None or s > step]
        if moved:
            self.manager.reload()
        return moved

    def restore_newest(self, abstract_state: Any, config: TrainConfig, at_most: int | None = None,
                       ) -> Restored | None:
        """The newest readable checkpoint (at most step `at_most`), None if there is none.

        A checkpoint saved for another model raises CheckpointError. Unreadable checkpoints
        (corrupted, truncated, incomplete: a read error, a missing item or a checksum mismatch
        of any item) are skipped; once an older one restores, the skipped ones are moved to
        <workdir>/checkpoints_unreadable (not deleted) with a CheckpointWarning naming them, so
        the resumed run can write those steps again. If none restores, CheckpointError lists the
        errors and nothing is moved.

        In multi-process runs every step is accepted or skipped by all processes together: each
        process reads its shards, then one decision (all read it) is taken for all before the
        checksums (a computation over all processes) are checked, and only then is anything
        moved. A process that cannot read a shard never picks another step than the others.
        """
        # reads without orbax's barriers across processes: a process whose read fails would
        # skip the barrier the others wait in (and then meet them in the wrong collective)
        reader = self.manager if jax.process_count() == 1 else make_manager(
            self.workdir, keep=0, async_save=False, create=False, local=True)
        try:
            return self._restore_newest(reader, abstract_state, config, at_most)
        finally:
            if reader is not self.manager:
                reader.close()

    def _restore_newest(self, reader: ocp.CheckpointManager, abstract_state: Any,
                        config: TrainConfig, at_most: int | None) -> Restored | None:
        failed: list[tuple[int, BaseException | str]] = []
        for step in reversed(self.steps()):
            if at_most is not None and step > at_most:
                continue
            restored, error = None, None
            try:
                check_compatible(reader, step, abstract_state, config)
            except CheckpointError as err:
                error = err  # another model: the same on every process (same files)
            except Exception as err:  # noqa: BLE001 - unreadable config or metadata
                error = err
            if error is None:
                try:
                    restored = read_state(reader, step, abstract_state)
                except Exception as err:  # noqa: BLE001 - unreadable arrays or JSON
                    error = err
            # one decision for all processes: 0 read, 1 unreadable, 2 saved for another model
            code = 2 if isinstance(error, CheckpointError) else int(error is not None)
            decided = distributed.all_max(code)
            if decided == 2:
                raise error if isinstance(error, CheckpointError) else CheckpointError(
                    f"checkpoint {step_dir(self.workdir, step)} was saved for another model "
                    "(reported by another process)")
            if decided:
                failed.append((step, error if error is not None else
                               "unreadable on another process"))
                continue
            try:
                result = verify_state(restored, abstract_state, step, step_dir(self.workdir,
                                                                                step))
            except CheckpointError as err:
                failed.append((step, err))
                continue
            for bad, err in failed:
                self._set_aside(bad, err, used=step)
            if failed:
                self.manager.reload()
            return result
        if failed:
            errors = "; ".join(f"{step_dir(self.workdir, s)}: {describe(e)}" for s, e in failed)
            raise CheckpointError(
                f"no readable checkpoint in {self.directory} ({errors}). Move the damaged "
                "checkpoints away to start over, or pass --config.resume=False "
                "--config.overwrite=True")
        return None

    def _set_aside(self, step: int, err: BaseException | str, used: int) -> None:
        source = step_dir(self.workdir, step)
        target = self._move(step, UNREADABLE_DIR)
        warnings.warn(f"checkpoint {source} is unreadable ({describe(err)}); moved it to "
                      f"{target} and resuming from step {used} instead", CheckpointWarning,
                      stacklevel=4)

    def restore_latest(self, abstract_state: Any, config: TrainConfig,
                       ) -> tuple[Any, dict | None, int] | None:
        """(state, data_state, step) of restore_newest (see there), None if there is none."""
        restored = self.restore_newest(abstract_state, config)
        return None if restored is None else (restored.state, restored.data_state, restored.step)

    def close(self) -> None:
        """Waits for the pending save and closes the manager. A write error is raised once: the
        closing manager re-raising the failure of a save already reported is not raised again
        (nor may it replace the error being reported)."""
        error: CheckpointError | None = None
        try:
            self.wait()
        except CheckpointError as err:
            error = err
        try:
            self.manager.close()
        except Exception as err:  # noqa: BLE001 - orbax re-raises the writer thread's error
            if error is None and not self.failed:
                error = self._write_error(None, err)
        if error is not None:
            raise error


def newest_data_state(workdir: str) -> tuple[int, dict] | None:
    """(step, data loader state) of the newest checkpoint whose data item reads, None if there is
    none: the trainer checks the data against it before compiling; the restore checks the rest."""
    if not os.path.isdir(checkpoint_dir(workdir)):
        return None
    manager = make_manager(workdir, keep=0, async_save=False, create=False)
    try:
        for step in sorted(manager.all_steps(), reverse=True):
            if "data" not in present_items(manager, step):
                continue
            try:
                state = manager.restore(step, args=ocp.args.Composite(
                    data=ocp.args.JsonRestore()))["data"]
            except Exception:  # noqa: BLE001 - unreadable: restore_newest reports or skips it
                continue
            if isinstance(state, dict):
                return int(step), state
    finally:
        manager.close()
    return None
