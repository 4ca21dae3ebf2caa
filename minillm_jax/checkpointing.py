"""Checkpoints of a run in <workdir>/checkpoints/<step>/, written with orbax.

Items per step (one orbax step holds them all, so a restore never mixes model and data positions):
  params       the model parameters (float32, orbax StandardSave / OCDBT)
  opt_state    the optimizer state (absent in params-only checkpoints, e.g. imported weights)
  train        {step, rng}: the step counter and the run's base PRNG key (dropout masks are
               fold_in(rng, step), so a resumed run draws the same masks)
  data         the training data loader state (JSON: the next global micro-batch index)
  config       the resolved run config (JSON)
  fingerprint  per-array checksums of params / opt_state / train, SHA-256 digests of the JSON
               items (data, config, loop) and the list of items saved (JSON), all checked on
               restore: orbax detects truncated or missing files, but not flipped bytes inside
               a chunk or a changed digit in a JSON file
  metrics      {val_loss} of checkpoints saved at a periodic eval (only with keep_best)
  loop         the training loop's own state (JSON: skipped steps so far; the time budget's clock
               and horizon)

Writes are atomic: orbax writes <step>.orbax-checkpoint-tmp-*/ and renames it to <step>/ once
every item is committed, so a run killed mid-save leaves the previous checkpoints intact (the tmp
directory is cleaned up by the next run). Old checkpoints are deleted only after a newer one has
committed. Saves are asynchronous: `save` copies the arrays to host memory and returns; the
files are written by a background thread while training continues.

`RunCheckpoints` is what the trainer uses (resume with fallback past unreadable checkpoints,
decided once for all processes; refusal of a checkpoint saved for another model; write errors
reported with the checkpoints that are kept; a protected last known good step that rotation never
deletes); `load_config` / `load_params` / `save_params` serve the CLIs and the converters.
Run-directory housekeeping (paths, starting over, metrics trimming) is minillm_jax/rundir.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
import warnings
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocp_managers

from minillm_jax import distributed
from minillm_jax.config import ConfigError, ModelConfig, TrainConfig, build_config
from minillm_jax.rundir import DISCARDED_DIR, UNREADABLE_DIR, checkpoint_dir, step_dir

ITEMS = ("params", "opt_state", "train", "data", "config", "fingerprint", "loop")
JSON_ITEMS = ("data", "config", "loop")
BEST_METRIC = "val_loss"

class CheckpointError(RuntimeError):
    """A checkpoint cannot be used or written; the message names it and what to do."""


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped (e.g. unreadable) and an older one is used instead."""


def quiet_orbax_logs() -> None:
    """orbax (and jax) log every file operation at INFO through absl: keep WARNING and above."""
    from absl import logging as absl_logging

    if absl_logging.get_verbosity() > absl_logging.WARNING:
        absl_logging.set_verbosity(absl_logging.WARNING)


def _item_handlers() -> dict[str, Any]:
    standard, as_json = ocp.StandardCheckpointHandler, ocp.JsonCheckpointHandler
    return {"params": standard(), "opt_state": standard(), "train": standard(),
            "data": as_json(), "config": as_json(), "fingerprint": as_json(),
            "loop": as_json()}


def _best_metric(metrics: Any) -> float:
    """Lower is better; checkpoints saved between evals carry {} and rank last."""
    value = (metrics or {}).get(BEST_METRIC)
    return float("inf") if value is None else float(value)


@dataclasses.dataclass
class KeepSteps:
    """An orbax preservation policy keeping the steps in `steps`, a set the trainer updates
    while the run goes on (orbax's CustomSteps takes a fixed list): the last known good
    checkpoint, the rollback target, survives any number of newer checkpoints."""

    steps: set[int] = dataclasses.field(default_factory=set)

    def should_preserve(self, checkpoints: Sequence[Any], *, context: Any) -> Sequence[bool]:
        del context
        kept = set(self.steps)
        return [info.step in kept for info in checkpoints]


def _preservation_policy(keep: int, keep_best: bool, protected: KeepSteps | None = None) -> Any:
    """The newest `keep` checkpoints (all if keep <= 0), plus with keep_best the one with the
    lowest periodic validation loss, plus the `protected` steps. The newest checkpoint is always
    kept, so resuming always continues from the newest step."""
    latest = ocp_managers.LatestN(n=keep if keep and keep > 0 else None)
    policies = [latest]
    if keep_best:
        policies.append(ocp_managers.BestN(get_metric_fn=_best_metric, reverse=True, n=1,
                                           keep_checkpoints_without_metrics=False))
    if protected is not None:
        policies.append(protected)
    return policies[0] if len(policies) == 1 else ocp_managers.AnyPreservationPolicy(policies)


def make_manager(workdir: str, keep: int = 3, async_save: bool = True, keep_best: bool = False,
                 cleanup_tmp: bool = False, create: bool = True,
                 protected: KeepSteps | None = None) -> ocp.CheckpointManager:
    """An orbax CheckpointManager for <workdir>/checkpoints with this module's items.

    keep: newest checkpoints kept (<= 0: all); keep_best: also keep the checkpoint with the lowest
    `val_loss` passed as `metrics` to `save`; cleanup_tmp: delete unfinished saves of earlier runs;
    protected: steps never deleted by rotation (a set that may change while the manager lives).
    """
    quiet_orbax_logs()
    options = ocp.CheckpointManagerOptions(
        create=create, enable_async_checkpointing=async_save, cleanup_tmp_directories=cleanup_tmp,
        preservation_policy=_preservation_policy(keep, keep_best, protected),
        best_fn=_best_metric if keep_best else None, best_mode="min")
    return ocp.CheckpointManager(checkpoint_dir(workdir), item_handlers=_item_handlers(),
                                 options=options)


def _reader(workdir: str) -> ocp.CheckpointManager:
    """A synchronous manager that never creates or deletes anything."""
    directory = checkpoint_dir(workdir)
    if not os.path.isdir(directory):
        raise CheckpointError(f"no checkpoint in {directory}: pass the run's workdir")
    return make_manager(workdir, keep=0, async_save=False, create=False)


# --------------------------------------------------------------------------------------------
# Fingerprints: order-aware wrapping uint32 sums of each array's bits, computed where the arrays
# live (integer sums are exact, so the value is the same for any sharding or device count).


def _leaf_fingerprint(x: jax.Array) -> jax.Array:
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.uint8)
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
    bits = jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)
    index, stride = jnp.zeros(bits.shape, jnp.uint32), 1
    for axis in reversed(range(bits.ndim)):
        index = index + jax.lax.broadcasted_iota(jnp.uint32, bits.shape, axis) * jnp.uint32(stride)
        stride = (stride * bits.shape[axis]) & 0xFFFFFFFF
    mixed = (bits ^ jnp.uint32(0x9E3779B9)) * (index * jnp.uint32(2) + jnp.uint32(1))
    return jnp.sum(mixed, dtype=jnp.uint32)


_fingerprint_leaves = jax.jit(lambda leaves: [_leaf_fingerprint(x) for x in leaves])


def fingerprints(trees: dict[str, Any]) -> dict[str, dict[str, int]]:
    """{name: {keypath: checksum}} of every array of each tree (one compiled call, on device)."""
    flat = {name: jax.tree_util.tree_flatten_with_path(tree)[0] for name, tree in trees.items()}
    leaves = [leaf for items in flat.values() for _, leaf in items]
    values = iter(jax.device_get(_fingerprint_leaves(leaves)) if leaves else [])
    return {name: {jax.tree_util.keystr(path): int(next(values)) for path, _ in items}
            for name, items in flat.items()}


def fingerprint(tree: Any) -> dict[str, int]:
    """{keypath: checksum} of every array in `tree` (computed on device, sharding-independent)."""
    return fingerprints({"tree": tree})["tree"]


def _state_fingerprints(state: Any) -> dict[str, dict[str, int]]:
    trees = {"params": state.params, "train": {"step": state.step, "rng": state.rng}}
    if state.opt_state is not None:
        trees["opt_state"] = state.opt_state
    return fingerprints(trees)


def json_digest(value: Any) -> str:
    """SHA-256 of a JSON item's canonical text (what orbax writes reads back as equal JSON)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_fingerprints(expected: dict | None, actual: dict[str, dict[str, int]]) -> None:
    """Raises CheckpointError if an array's checksum differs (expected None: not checked)."""
    if not expected:
        return
    for item, sums in actual.items():
        saved = expected.get(item)
        if saved is None:
            continue
        bad = [k for k in sums if saved.get(k) != sums[k]]
        if bad or set(saved) != set(sums):
            names = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            raise CheckpointError(f"{item} do not match their checksums ({names or 'array list'}):"
                                  " the files are corrupted")


def _check_items(expected: dict, present: set[str], json_items: dict[str, Any]) -> None:
    """The items saved are all there and each JSON item matches its saved digest."""
    saved = expected.get("items")
    if saved is not None:
        missing = sorted(set(saved) - present)
        if missing:
            raise CheckpointError(f"items {missing} are missing: the checkpoint is incomplete")
    for name, digest in (expected.get("json") or {}).items():
        if name not in json_items or json_digest(json_items[name]) != digest:
            raise CheckpointError(f"{name} does not match its checksum: the file is corrupted")


# --------------------------------------------------------------------------------------------
# Save / restore of one step


def _describe(err: BaseException | str) -> str:
    """One line for an I/O error (orbax and tensorstore errors can be pages long)."""
    if isinstance(err, str):
        return err
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    full = str(err).strip()
    text = full.splitlines()[0] if full else type(err).__name__
    if len(text) > 300:
        text = text[:297] + "..."
    for marker in ("No space left on device", "File too large", "Permission denied",
                   "Read-only file system", "Disk quota exceeded"):
        if marker in full and marker not in text:
            return f"{marker}: {text}"
    return text


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_state: dict | None,
         config: TrainConfig | ml_collections.ConfigDict, metrics: dict | None = None,
         loop_state: dict | None = None) -> None:
    """Saves one step (asynchronously when the manager is async). `metrics` ({"val_loss": x})
    ranks the checkpoint for keep_best; `loop_state` is the loop's own JSON state."""
    # The fingerprints are computed by a jitted program that runs on every device and uses
    # collectives. Compute them here, on the thread that runs the training loop, and never
    # inside orbax's background save or any other thread. XLA:CPU queues one launch on its
    # devices from separate pool tasks, so collective programs launched from two Python threads
    # can run in a different order on different devices. Each device then waits in a rendezvous
    # for a program the other devices have not reached, and XLA aborts after 40 s.
    json_items = {"config": build_config(config).to_dict()}
    if data_state is not None:
        json_items["data"] = data_state
    if loop_state:
        json_items["loop"] = loop_state
    sums: dict[str, Any] = dict(_state_fingerprints(state))
    sums["json"] = {name: json_digest(value) for name, value in json_items.items()}
    items = {
        "params": ocp.args.StandardSave(state.params),
        "train": ocp.args.StandardSave({"step": state.step, "rng": state.rng}),
        **{name: ocp.args.JsonSave(value) for name, value in json_items.items()},
    }
    if state.opt_state is not None:
        items["opt_state"] = ocp.args.StandardSave(state.opt_state)
    sums["items"] = sorted(items)
    items["fingerprint"] = ocp.args.JsonSave(sums)
    manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)


def _present_items(manager: ocp.CheckpointManager, step: int) -> set[str]:
    path = os.path.join(str(manager.directory), str(int(step)))
    return {name for name in ITEMS if os.path.isdir(os.path.join(path, name))}


class Restored(NamedTuple):
    """A checkpoint read back: the state, the data loader position, the loop state, the step."""

    state: Any
    data_state: dict | None
    loop_state: dict | None
    step: int


def _read_state(manager: ocp.CheckpointManager, step: int, abstract_state: Any) -> dict:
    """Every item of checkpoint `step` (arrays onto `abstract_state`'s shardings); no checks."""
    as_restore = lambda tree: ocp.args.StandardRestore(tree)  # noqa: E731
    present = _present_items(manager, step)
    args = {"params": as_restore(abstract_state.params),
            "train": as_restore({"step": abstract_state.step, "rng": abstract_state.rng})}
    if "opt_state" in present:
        args["opt_state"] = as_restore(abstract_state.opt_state)
    for name in (*JSON_ITEMS, "fingerprint"):
        if name in present:
            args[name] = ocp.args.JsonRestore()
    restored = dict(manager.restore(step, args=ocp.args.Composite(**args)))
    restored["_present"] = present
    return restored


def _verify_state(restored: dict, abstract_state: Any, step: int, where: str) -> Restored:
    """Checks what _read_state read against the saved fingerprints (a collective computation:
    every process runs it) and returns it. A checkpoint without fingerprints (written before
    they existed) is accepted with a CheckpointWarning naming what cannot be checked."""
    state = abstract_state.replace(
        params=restored["params"], step=restored["train"]["step"], rng=restored["train"]["rng"],
        opt_state=restored.get("opt_state"))
    expected = restored.get("fingerprint")
    json_items = {name: restored[name] for name in JSON_ITEMS if name in restored}
    if not expected:
        warnings.warn(f"checkpoint {where} has no checksums (saved by an older version): flipped "
                      "bytes in its arrays, data position, config or loop state cannot be "
                      "detected", CheckpointWarning, stacklevel=3)
    else:
        _check_fingerprints(expected, _state_fingerprints(state))
        _check_items(expected, restored["_present"], json_items)
        if "json" not in expected:
            warnings.warn(f"checkpoint {where} has checksums of its arrays only (saved by an "
                          "older version): a changed data position, config or loop state "
                          "cannot be detected", CheckpointWarning, stacklevel=3)
    return Restored(state, json_items.get("data"), json_items.get("loop"), int(step))


def restore_state(manager: ocp.CheckpointManager, step: int, abstract_state: Any,
                  ) -> tuple[Any, dict | None]:
    """Restores (state, data_state) onto the shardings carried by `abstract_state` and checks
    every item against the saved fingerprints. opt_state is None for a params-only checkpoint."""
    restored = _verify_state(_read_state(manager, step, abstract_state), abstract_state, step,
                             os.path.join(str(manager.directory), str(int(step))))
    return restored.state, restored.data_state


def _restore_config(manager: ocp.CheckpointManager, step: int) -> dict:
    return manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]


# --------------------------------------------------------------------------------------------
# Compatibility of a checkpoint with the current config


def _shape_differences(saved_tree: Any, wanted_tree: Any, limit: int = 4) -> list[str]:
    """'path saved vs wanted' for arrays whose shape differs or that exist on one side only;
    `saved_tree` is orbax metadata (namedtuples stored as dicts, tuples as lists)."""
    saved = {"/".join(map(str, path)): tuple(v.shape)
             for path, v in ocp.tree.to_flat_dict(saved_tree).items()
             if v is not None and hasattr(v, "shape")}
    wanted = {"/".join(ocp.tree.str_keypath(path)): tuple(v.shape)
              for path, v in jax.tree_util.tree_flatten_with_path(wanted_tree)[0]}
    out = []
    for key in sorted(set(saved) | set(wanted)):
        a, b = saved.get(key), wanted.get(key)
        if a != b:
            out.append(f"{key} {'missing' if a is None else a} vs {'missing' if b is None else b}")
    if len(out) > limit:
        out = out[:limit] + [f"{len(out) - limit} more"]
    return out


def model_field_differences(saved: dict, current: ModelConfig) -> list[str]:
    """'field=saved vs current' for each architecture field that differs (ModelConfig.identity;
    fields the checkpoint's config lacks take configs/base.py's defaults)."""
    try:
        saved_identity = ModelConfig.from_flat(saved).identity()
    except ConfigError as err:
        return [f"the checkpoint's model config is not valid here ({err})"]
    wanted = current.identity()
    return [f"{name}={saved_identity.get(name)!r} in the checkpoint vs {wanted.get(name)!r} in "
            "the config" for name in sorted(set(saved_identity) | set(wanted))
            if saved_identity.get(name) != wanted.get(name)]


def check_compatible(manager: ocp.CheckpointManager, step: int, abstract_state: Any,
                     config: TrainConfig) -> None:
    """Raises CheckpointError listing the mismatched fields (and parameter shapes) when the
    checkpoint was saved for another model or optimizer state layout. Read errors propagate."""
    config = build_config(config)
    saved_config = _restore_config(manager, step) if "config" in _present_items(
        manager, step) else {}
    fields = model_field_differences(saved_config, config.model) if saved_config else []
    metadata = manager.item_metadata(step)
    shapes = _shape_differences(metadata["params"].tree, abstract_state.params)
    opt = []
    if "opt_state" in _present_items(manager, step) and not shapes:
        opt = _shape_differences(metadata["opt_state"].tree, abstract_state.opt_state)
    if not (fields or shapes or opt):
        return
    path = os.path.join(str(manager.directory), str(int(step)))
    what = "a different model" if fields or shapes else "a different optimizer state"
    details = "; ".join(fields) if fields else ""
    if shapes:
        details += ("; " if details else "") + "parameter shapes (checkpoint vs config): " + (
            ", ".join(shapes))
    if opt:
        current = config.to_dict()
        opt_fields = [f"{k}={saved_config[k]!r} in the checkpoint vs {current[k]!r} in the config"
                      for k in sorted(set(saved_config) & set(current))
                      if (k == "opt" or k.startswith("opt_") or k.endswith("_dtype"))
                      and saved_config[k] != current[k]]
        details = "; ".join(opt_fields + ["optimizer state shapes (checkpoint vs config): "
                                          + ", ".join(opt)])
    raise CheckpointError(
        f"checkpoint {path} was saved for {what}: {details}. Resume with the checkpoint's "
        "settings, use another --config.workdir, or replace the run with --config.resume=False "
        "--config.overwrite=True")


# --------------------------------------------------------------------------------------------
# The trainer's view of a run's checkpoints


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
                                  f"({_describe(err)})") from None
        self.keep_best = keep_best
        self.pending: int | None = None  # step of the save still being written
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

    def _write_error(self, step: int, err: BaseException) -> CheckpointError:
        try:
            self.manager.reload()
        except Exception:  # noqa: BLE001 - the report matters more than the listing
            pass
        kept = self.steps()
        resume = (f"rerun the same command to resume from step {kept[-1]}" if kept else
                  "rerun the same command to start again")
        return CheckpointError(
            f"the checkpoint for step {step} could not be written to {self.directory} "
            f"({_describe(err)}); the run stopped. Checkpoints kept: "
            f"{', '.join(map(str, kept)) or 'none'}. Free disk space or fix the directory, then "
            f"{resume}")

    def wait(self) -> None:
        """Blocks until the pending save is on disk; raises CheckpointError if it failed."""
        try:
            self.manager.wait_until_finished()
        except Exception as err:  # noqa: BLE001 - orbax re-raises the writer thread's error
            step, self.pending = self.pending, None
            raise self._write_error(step if step is not None else -1, err) from err
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
            raise self._write_error(step, err) from err
        self.blocking_s.append(time.perf_counter() - start)
        self.pending = step
        return True

    def loop_state(self, step: int) -> dict | None:
        """The loop state saved with `step` (None if it has none)."""
        if "loop" not in _present_items(self.manager, step):
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
        failed: list[tuple[int, BaseException | str]] = []
        for step in reversed(self.steps()):
            if at_most is not None and step > at_most:
                continue
            restored, error = None, None
            try:
                check_compatible(self.manager, step, abstract_state, config)
            except CheckpointError as err:
                error = err  # another model: the same on every process (same files)
            except Exception as err:  # noqa: BLE001 - unreadable config or metadata
                error = err
            if error is None:
                try:
                    restored = _read_state(self.manager, step, abstract_state)
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
                result = _verify_state(restored, abstract_state, step, step_dir(self.workdir,
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
            errors = "; ".join(f"{step_dir(self.workdir, s)}: {_describe(e)}" for s, e in failed)
            raise CheckpointError(
                f"no readable checkpoint in {self.directory} ({errors}). Move the damaged "
                "checkpoints away to start over, or pass --config.resume=False "
                "--config.overwrite=True")
        return None

    def _set_aside(self, step: int, err: BaseException | str, used: int) -> None:
        source = step_dir(self.workdir, step)
        target = self._move(step, UNREADABLE_DIR)
        warnings.warn(f"checkpoint {source} is unreadable ({_describe(err)}); moved it to "
                      f"{target} and resuming from step {used} instead", CheckpointWarning,
                      stacklevel=3)

    def restore_latest(self, abstract_state: Any, config: TrainConfig,
                       ) -> tuple[Any, dict | None, int] | None:
        """(state, data_state, step) of restore_newest (see there), None if there is none."""
        restored = self.restore_newest(abstract_state, config)
        return None if restored is None else (restored.state, restored.data_state, restored.step)

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self.manager.close()


# --------------------------------------------------------------------------------------------
# Reading checkpoints outside training (CLIs, converters)


def _resolve_step(manager: ocp.CheckpointManager, workdir: str, step: int | None) -> int:
    steps = sorted(manager.all_steps())
    if not steps:
        raise CheckpointError(f"no checkpoint in {checkpoint_dir(workdir)}")
    if step is None:
        return steps[-1]
    if int(step) not in steps:
        raise CheckpointError(f"no checkpoint for step {step} in {checkpoint_dir(workdir)}; "
                              f"steps: {steps}")
    return int(step)


def load_config_dict(workdir: str, step: int | None = None) -> tuple[dict, int]:
    """The flat config dict saved with a checkpoint (newest step if None), unchecked."""
    manager = _reader(workdir)
    step = _resolve_step(manager, workdir, step)
    return _restore_config(manager, step), step


def load_config(workdir: str, step: int | None = None) -> tuple[TrainConfig, int]:
    """The run config saved with a checkpoint (newest step if None), typed and checked."""
    saved, step = load_config_dict(workdir, step)
    try:
        config = build_config(saved, os.path.basename(os.path.normpath(workdir)))
    except ConfigError as err:
        raise CheckpointError(f"the config saved with {step_dir(workdir, step)} is not valid "
                              f"here: {err}") from None
    return config, step


def restore_params(workdir: str, step: int, target: Any) -> Any:
    """The params of checkpoint `step` restored onto `target` (ShapeDtypeStructs, optionally
    with shardings), checked against the saved fingerprint."""
    manager = _reader(workdir)
    args = {"params": ocp.args.StandardRestore(target)}
    if "fingerprint" in _present_items(manager, step):
        args["fingerprint"] = ocp.args.JsonRestore()
    else:
        warnings.warn(f"checkpoint {step_dir(workdir, step)} has no checksums (saved by an older "
                      "version): flipped bytes in its parameters cannot be detected",
                      CheckpointWarning, stacklevel=2)
    try:
        restored = manager.restore(step, args=ocp.args.Composite(**args))
        expected = restored.get("fingerprint") if "fingerprint" in args else None
        _check_fingerprints({"params": expected["params"]} if expected else None,
                            {"params": fingerprint(restored["params"])})
    except CheckpointError as err:
        raise CheckpointError(f"checkpoint {step_dir(workdir, step)}: {err}") from None
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"checkpoint {step_dir(workdir, step)} cannot be read "
                              f"({_describe(err)})") from None
    return restored["params"]


def load_params(workdir: str, step: int | None = None) -> tuple[TrainConfig, dict, int]:
    """(run config, float32 params, step) of a checkpoint, on the default device."""
    from minillm_jax.model import abstract_params, build_model

    config, step = load_config(workdir, step)
    target = abstract_params(build_model(config.model))
    params = restore_params(workdir, step, target)
    if config.optim.opt == "sfadamw":  # evaluate/export schedule-free's x, not the iterate y
        params = _schedule_free_eval_params(workdir, step, config, params)
    return config, params, step


def _schedule_free_eval_params(workdir: str, step: int, config: TrainConfig, params: Any) -> Any:
    from minillm_jax.optim import build_optimizer, eval_params

    manager = _reader(workdir)
    if "opt_state" not in _present_items(manager, step):
        return params  # params-only checkpoint: nothing to average with
    tx, _ = build_optimizer(config.optim, config.run.iterations)
    target = jax.eval_shape(tx.init, params)
    restored = manager.restore(step, args=ocp.args.Composite(
        opt_state=ocp.args.StandardRestore(target)))
    return eval_params(restored["opt_state"], params)


def save_params(workdir: str, config: TrainConfig | ml_collections.ConfigDict, params: dict,
                step: int = 0) -> str:
    """Writes a params-only checkpoint (e.g. imported weights); resuming it starts a fresh
    optimizer state at `step`."""
    manager = make_manager(workdir, async_save=False)
    seed = config.run.seed if isinstance(config, TrainConfig) else config.seed
    train_item = {"step": jnp.asarray(step, jnp.int32),
                  "rng": jax.random.PRNGKey(seed)}
    saved_config = config.to_dict()  # as given: imported weights' config
    sums: dict[str, Any] = dict(fingerprints({"params": params, "train": train_item}))
    sums["json"] = {"config": json_digest(saved_config)}
    sums["items"] = ["config", "params", "train"]
    items = {
        "params": ocp.args.StandardSave(params),
        "train": ocp.args.StandardSave(train_item),
        "config": ocp.args.JsonSave(saved_config),
        "fingerprint": ocp.args.JsonSave(sums),
    }
    manager.save(step, args=ocp.args.Composite(**items), force=True)
    manager.wait_until_finished()
    manager.close()
    return step_dir(workdir, step)
