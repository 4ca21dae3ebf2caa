"""Checkpoints of a run in <workdir>/checkpoints/<step>/, written with orbax.

Items per step: params, opt_state, train ({step, rng}), data (loader state, JSON), config (JSON).
One orbax step holds them all, so a restore never mixes model and data positions.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

CHECKPOINT_DIR = "checkpoints"


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


def make_manager(workdir: str, keep: int = 3, async_save: bool = True) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=async_save)
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_state: dict | None,
         config: ml_collections.ConfigDict) -> None:
    """Saves one step (asynchronously when the manager is async)."""
    items = {
        "params": ocp.args.StandardSave(state.params),
        "opt_state": ocp.args.StandardSave(state.opt_state),
        "train": ocp.args.StandardSave({"step": state.step, "rng": state.rng}),
        "config": ocp.args.JsonSave(config.to_dict()),
    }
    if data_state is not None:
        items["data"] = ocp.args.JsonSave(data_state)
    manager.save(step, args=ocp.args.Composite(**items), force=True)


def restore_state(manager: ocp.CheckpointManager, step: int, abstract_state: Any,
                  ) -> tuple[Any, dict | None]:
    """Restores (state, data_state) onto the shardings carried by `abstract_state`."""
    as_restore = lambda tree: ocp.args.StandardRestore(tree)  # noqa: E731
    items = manager.item_metadata(step)
    args = {"params": as_restore(abstract_state.params),
            "train": as_restore({"step": abstract_state.step, "rng": abstract_state.rng})}
    if "opt_state" in items and items["opt_state"] is not None:
        args["opt_state"] = as_restore(abstract_state.opt_state)
    if "data" in items and items["data"] is not None:
        args["data"] = ocp.args.JsonRestore()
    restored = manager.restore(step, args=ocp.args.Composite(**args))
    state = abstract_state.replace(
        params=restored["params"], step=restored["train"]["step"], rng=restored["train"]["rng"],
        opt_state=restored["opt_state"] if "opt_state" in args else None)
    return state, restored.get("data") if "data" in args else None


def load_config(workdir: str, step: int | None = None) -> tuple[ml_collections.ConfigDict, int]:
    """The config saved with a checkpoint (newest step if None)."""
    manager = make_manager(workdir, async_save=False)
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {checkpoint_dir(workdir)}")
    config = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
    return ml_collections.ConfigDict(config), step


def load_params(workdir: str, step: int | None = None,
                ) -> tuple[ml_collections.ConfigDict, dict, int]:
    """(run config, float32 params, step) of a checkpoint, on the default device."""
    from minillm_jax.model import abstract_params, build_model

    config, step = load_config(workdir, step)
    manager = make_manager(workdir, async_save=False)
    target = abstract_params(build_model(config))
    restored = manager.restore(
        step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target)))
    return config, restored["params"], step


def save_params(workdir: str, config: ml_collections.ConfigDict, params: dict,
                step: int = 0) -> str:
    """Writes a params-only checkpoint (e.g. imported weights); resuming it starts a fresh
    optimizer state at `step`."""
    import jax.numpy as jnp

    manager = make_manager(workdir, async_save=False)
    items = {
        "params": ocp.args.StandardSave(params),
        "train": ocp.args.StandardSave({"step": jnp.asarray(step, jnp.int32),
                                        "rng": jax.random.PRNGKey(int(config.get("seed", 0)))}),
        "config": ocp.args.JsonSave(config.to_dict()),
    }
    manager.save(step, args=ocp.args.Composite(**items), force=True)
    manager.wait_until_finished()
    manager.close()
    return os.path.join(checkpoint_dir(workdir), str(step))
