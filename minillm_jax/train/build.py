"""From a TrainConfig to what runs: mesh, model, optimizer, shardings and compiled steps.

One builder serves the trainer, the benchmark and `evaluate`, so all three run the same program:

    run = build_run(config)
    state = run.init_state()                       # or restore onto run.abstract_state
    step = run.compile_train_step()                # AOT: lower().compile(), state donated
    state, metrics = step(state, batch, horizon)   # batch: (acc_steps, B, T) "x" and "y";
                                                   # horizon: the lr schedule's length (int32)
    eval_step = run.eval_step()                    # (params, {"x","y","mask"}) -> sums
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding

from minillm_jax.train import sharding
from minillm_jax.model.attention import AttentionChoice, attention_for_device, choose_attention
from minillm_jax.config import TrainConfig, resolve_compute_dtype
from minillm_jax.model.transformer import Transformer, build_model
from minillm_jax.optim import build_optimizer
from minillm_jax.train.step import TrainState, init_state, make_eval_step, make_train_step

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Run:
    """The built pieces of a run. `abstract_state` is a TrainState of ShapeDtypeStructs carrying
    `state_shardings`: the target for restoring a checkpoint and for compiling. `config` has
    compute_dtype resolved for the devices (auto: bfloat16 on GPU/TPU, float32 on CPU; why in
    `compute_dtype_reason`); `model` runs the attention kernel in `attention`
    (config.execution.attention_impl resolved for the device)."""

    config: TrainConfig
    mesh: Mesh
    model: Transformer
    tx: optax.GradientTransformation
    state_shardings: TrainState
    abstract_state: TrainState
    batch_sharding: NamedSharding
    attention: AttentionChoice
    compute_dtype_reason: str

    @property
    def batch_shape(self) -> tuple[int, int, int]:
        """(acc_steps, batch_size, sequence_length) of a training batch's "x" and "y"."""
        c = self.config
        return c.data.acc_steps, c.data.batch_size, c.model.sequence_length

    def abstract_batch(self) -> dict[str, jax.ShapeDtypeStruct]:
        return {k: jax.ShapeDtypeStruct(self.batch_shape, jnp.int32, sharding=self.batch_sharding)
                for k in ("x", "y")}

    def init_state(self) -> TrainState:
        """A fresh state from config.run.seed, created directly in its shardings."""
        model, tx, seed = self.model, self.tx, self.config.run.seed
        return jax.jit(lambda: init_state(model, tx, seed), out_shardings=self.state_shardings)()

    def train_step(self) -> Callable:
        """The jitted (not yet compiled) step(state, batch, horizon): `horizon` is the lr
        schedule's length in steps, an int32 scalar."""
        optimizer = functools.partial(build_optimizer, self.config.optim,
                                      matmul_dtype=self.config.execution.compute_dtype)
        step = make_train_step(self.model, optimizer,
                               self.config.execution.loss_chunk_size)  # optimizer(horizon, step)
        replicated = sharding.replicated(self.mesh)
        return jax.jit(step, in_shardings=(self.state_shardings, self.batch_sharding, replicated),
                       out_shardings=(self.state_shardings, replicated), donate_argnums=(0,))

    def lower_train_step(self) -> Any:
        """train_step() lowered for the run's state and batch shapes."""
        horizon = jax.ShapeDtypeStruct((), jnp.int32, sharding=sharding.replicated(self.mesh))
        return self.train_step().lower(self.abstract_state, self.abstract_batch(), horizon)

    def compile_train_step(self) -> Any:
        """train_step() compiled ahead of time: call it as step(state, batch, horizon)."""
        return self.lower_train_step().compile()

    def horizon(self, steps: int) -> jax.Array:
        """The horizon argument of the train step, on the devices."""
        return jax.device_put(np.int32(steps), sharding.replicated(self.mesh))

    def eval_step(self) -> Callable:
        """The jitted eval step over params sharded like the state's."""
        batch = {k: sharding.batch_sharding(self.mesh, 2, 0) for k in ("x", "y", "mask")}
        return jax.jit(make_eval_step(self.model, self.config.execution.loss_chunk_size),
                       in_shardings=(self.state_shardings.params, batch),
                       out_shardings=sharding.replicated(self.mesh))

    def compile_eval_step(self) -> Any:
        """eval_step() compiled ahead of time for eval batches of (eval_batch_size, T)."""
        c = self.config
        shape = (c.data.eval_batch_size, c.model.sequence_length)
        batch_sharding = sharding.batch_sharding(self.mesh, 2, 0)
        batch = {"x": jax.ShapeDtypeStruct(shape, jnp.int32, sharding=batch_sharding),
                 "y": jax.ShapeDtypeStruct(shape, jnp.int32, sharding=batch_sharding),
                 "mask": jax.ShapeDtypeStruct(shape, jnp.float32, sharding=batch_sharding)}
        return self.eval_step().lower(self.abstract_state.params, batch).compile()


def enable_compilation_cache(setting: str) -> str | None:
    """Points JAX's persistent compilation cache at `setting` (config.compilation_cache: "" =
    the user cache directory, "off" = none, else a directory); returns the directory used."""
    if setting == "off":
        return None
    directory = setting or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "minillm_jax", "xla")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError:
        return None  # a cache is an optimisation: never a reason to stop
    jax.config.update("jax_compilation_cache_dir", directory)
    return directory


@dataclasses.dataclass(frozen=True)
class Target:
    """The devices a run is built for. `live`: this process's devices, where the cuDNN attention
    choice is confirmed by a test run (minillm_jax.model.attention.attention_for_device). Not
    live: the devices of a compile-only topology (jax.experimental.topologies; a GPU compiled
    for on a machine without one), where nothing runs, so the choice is made from the device
    kind alone, and every platform-dependent config field resolves for the target's platform,
    not for the host. `platform` / `device_kind` override the devices' own (a program lowered
    for CUDA over the host's devices, as the lowering tests do)."""

    devices: tuple[jax.Device, ...]
    live: bool = True
    platform_override: str | None = None
    device_kind_override: str | None = None

    @classmethod
    def local(cls) -> "Target":
        return cls(tuple(jax.devices()), live=True)

    @property
    def platform(self) -> str:
        return self.platform_override or self.devices[0].platform

    @property
    def device_kind(self) -> str:
        return self.device_kind_override or self.devices[0].device_kind


def build_run(config: TrainConfig, target: Target | None = None) -> Run:
    """Mesh, model, optimizer and shardings of `config` for `target` (default: this process's
    devices); nothing is allocated or compiled."""
    target = target or Target.local()
    mesh = sharding.make_mesh(config, target.devices)
    platform = target.platform
    _, dtype_reason = resolve_compute_dtype(config.execution.compute_dtype, platform)
    config = config.replace(execution=config.execution.for_platform(platform))
    if target.live:
        attention = attention_for_device(config.execution.attention_impl,
                                         config.execution.compute_dtype, config.model.head_dim,
                                         config.model.attention_dropout, target.devices[0])
    else:
        attention = choose_attention(config.execution.attention_impl, platform=platform,
                                     device_kind=target.device_kind,
                                     compute_dtype=config.execution.compute_dtype,
                                     head_dim=config.model.head_dim,
                                     attention_dropout=config.model.attention_dropout)
    model = build_model(config.model,
                        dataclasses.replace(config.execution, attention_impl=attention.impl))
    tx, _ = build_optimizer(config.optim, config.run.iterations,
                            matmul_dtype=config.execution.compute_dtype)
    shapes = jax.eval_shape(lambda: init_state(model, tx, config.run.seed))
    shardings = sharding.tree_shardings(mesh, shapes).replace(
        step=sharding.replicated(mesh), rng=sharding.replicated(mesh))
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            shapes, shardings)
    return Run(config=config, mesh=mesh, model=model, tx=tx, state_shardings=shardings,
               abstract_state=abstract, batch_sharding=sharding.batch_sharding(mesh, 3, 1),
               attention=attention, compute_dtype_reason=dtype_reason)
