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

This module saves and restores one step (`save`, `restore_state`, `check_compatible`) and serves
the CLIs and converters (`load_config` / `load_params` / `save_params`). What the trainer uses is
`minillm_jax.train.run_checkpoints.RunCheckpoints` (resume with fallback past unreadable
checkpoints, decided once for all processes; a protected last known good step); the checksums
are minillm_jax.train.integrity.
Run-directory housekeeping (paths, starting over, metrics trimming) is minillm_jax/train/rundir.py.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocp_managers

from minillm_jax.config import ConfigError, ModelConfig, TrainConfig, build_config
from minillm_jax.train.integrity import (CheckpointError, CheckpointWarning, check_fingerprints,
                                        check_items, fingerprint, fingerprints, json_digest,
                                        state_fingerprints)
from minillm_jax.train.rundir import checkpoint_dir, step_dir

ITEMS = ("params", "opt_state", "train", "data", "config", "fingerprint", "loop")
JSON_ITEMS = ("data", "config", "loop")
BEST_METRIC = "val_loss"

class _NoOrbaxTracebacks(logging.Filter):
    """A failed background write makes orbax log an error with a traceback per writer thread
    (pages for a full disk); RunCheckpoints reports the failure as one line with what to do, so
    orbax's records keep their message and lose the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and f"{os.sep}orbax{os.sep}" in record.pathname:
            record.exc_info, record.exc_text = None, None
        return True


def quiet_orbax_logs() -> None:
    """orbax (and jax) log every file operation at INFO through absl: keep WARNING and above,
    without orbax's tracebacks of failed writes (reported by RunCheckpoints)."""
    from absl import logging as absl_logging

    if absl_logging.get_verbosity() > absl_logging.WARNING:
        absl_logging.set_verbosity(absl_logging.WARNING)
    logger = logging.getLogger("absl")
    if not any(isinstance(f, _NoOrbaxTracebacks) for f in logger.filters):
        logger.addFilter(_NoOrbaxTracebacks())


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
                 protected: KeepSteps | None = None, local: bool = False,
                 ) -> ocp.CheckpointManager:
    """An orbax CheckpointManager for <workdir>/checkpoints with this module's items.

    keep: newest checkpoints kept (<= 0: all); keep_best: also keep the checkpoint with the lowest
    `val_loss` passed as `metrics` to `save`; cleanup_tmp: delete unfinished saves of earlier runs;
    protected: steps never deleted by rotation (a set that may change while the manager lives);
    local: a reader for this process alone (create=False): its restores read this process's
    shards without orbax's barrier across processes, so a process whose read fails cannot leave
    the others waiting in that barrier (the caller takes the decision across processes).
    """
    quiet_orbax_logs()
    extra: dict[str, Any] = {}
    if local:
        me = jax.process_index()
        extra["multiprocessing_options"] = ocp.options.MultiprocessingOptions(
            primary_host=me, active_processes={me}, barrier_sync_key_prefix=f"local{me}")
    options = ocp.CheckpointManagerOptions(
        create=create, enable_async_checkpointing=async_save, cleanup_tmp_directories=cleanup_tmp,
        preservation_policy=_preservation_policy(keep, keep_best, protected),
        best_fn=_best_metric if keep_best else None, best_mode="min", **extra)
    return ocp.CheckpointManager(checkpoint_dir(workdir), item_handlers=_item_handlers(),
                                 options=options)


def _reader(workdir: str) -> ocp.CheckpointManager:
    """A synchronous manager that never creates or deletes anything."""
    directory = checkpoint_dir(workdir)
    if not os.path.isdir(directory):
        raise CheckpointError(f"no checkpoint in {directory}: pass the run's workdir")
    return make_manager(workdir, keep=0, async_save=False, create=False)


# --------------------------------------------------------------------------------------------
# Save / restore of one step


def describe(err: BaseException | str) -> str:
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
    sums: dict[str, Any] = dict(state_fingerprints(state))
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


def present_items(manager: ocp.CheckpointManager, step: int) -> set[str]:
    path = os.path.join(str(manager.directory), str(int(step)))
    return {name for name in ITEMS if os.path.isdir(os.path.join(path, name))}


class Restored(NamedTuple):
    """A checkpoint read back: the state, the data loader position, the loop state, the step."""

    state: Any
    data_state: dict | None
    loop_state: dict | None
    step: int


def read_state(manager: ocp.CheckpointManager, step: int, abstract_state: Any) -> dict:
    """Every item of checkpoint `step` (arrays onto `abstract_state`'s shardings); no checks."""
    as_restore = lambda tree: ocp.args.StandardRestore(tree)  # noqa: E731
    present = present_items(manager, step)
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


def verify_state(restored: dict, abstract_state: Any, step: int, where: str) -> Restored:
    """Checks what read_state read against the saved fingerprints (a collective computation:
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
        check_fingerprints(expected, state_fingerprints(state))
        check_items(expected, restored["_present"], json_items)
        if "json" not in expected:
            warnings.warn(f"checkpoint {where} has checksums of its arrays only (saved by an "
                          "older version): a changed data position, config or loop state "
                          "cannot be detected", CheckpointWarning, stacklevel=3)
    return Restored(state, json_items.get("data"), json_items.get("loop"), int(step))


def restore_state(manager: ocp.CheckpointManager, step: int, abstract_state: Any,
                  ) -> tuple[Any, dict | None]:
    """Restores (state, data_state) onto the shardings carried by `abstract_state` and checks
    every item against the saved fingerprints. opt_state is None for a params-only checkpoint."""
    restored = verify_state(read_state(manager, step, abstract_state), abstract_state, step,
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
    saved_config = _restore_config(manager, step) if "config" in present_items(
        manager, step) else {}
    fields = model_field_differences(saved_config, config.model) if saved_config else []
    metadata = manager.item_metadata(step)
    shapes = _shape_differences(metadata["params"].tree, abstract_state.params)
    opt = []
    if "opt_state" in present_items(manager, step) and not shapes:
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
    if "fingerprint" in present_items(manager, step):
        args["fingerprint"] = ocp.args.JsonRestore()
    else:
        warnings.warn(f"checkpoint {step_dir(workdir, step)} has no checksums (saved by an older "
                      "version): flipped bytes in its parameters cannot be detected",
                      CheckpointWarning, stacklevel=2)
    try:
        restored = manager.restore(step, args=ocp.args.Composite(**args))
        expected = restored.get("fingerprint") if "fingerprint" in args else None
        check_fingerprints({"params": expected["params"]} if expected else None,
                            {"params": fingerprint(restored["params"])})
    except CheckpointError as err:
        raise CheckpointError(f"checkpoint {step_dir(workdir, step)}: {err}") from None
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"checkpoint {step_dir(workdir, step)} cannot be read "
                              f"({describe(err)})") from None
    return restored["params"]


def load_params(workdir: str, step: int | None = None) -> tuple[TrainConfig, dict, int]:
    """(run config, float32 params, step) of a checkpoint, on the default device."""
    from minillm_jax.model.transformer import abstract_params, build_model

    config, step = load_config(workdir, step)
    target = abstract_params(build_model(config.model))
    params = restore_params(workdir, step, target)
    if config.optim.opt == "sfadamw":  # evaluate/export schedule-free's x, not the iterate y
        params = _schedule_free_eval_params(workdir, step, config, params)
    return config, params, step


def _schedule_free_eval_params(workdir: str, step: int, config: TrainConfig, params: Any) -> Any:
    from minillm_jax.optim import build_optimizer, eval_params

    manager = _reader(workdir)
    if "opt_state" not in present_items(manager, step):
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
