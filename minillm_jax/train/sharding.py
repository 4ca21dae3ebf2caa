"""Device mesh and shardings: data parallel over ('data', 'fsdp'), parameters sharded over 'fsdp'.

One rule covers every parameter (dense, MoE, norms): shard the largest dimension divisible by the
fsdp size, replicate the rest. That is plain FSDP (ZeRO-3-like), enough from one GPU to one node.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from minillm_jax.config import TrainConfig, check_devices

BATCH_AXES = ("data", "fsdp")


def make_mesh(config: TrainConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The (data, fsdp) mesh of `config` over `devices` (default: all devices; a compile-only
    GPU topology's devices for minillm_jax.experiments.gpu_aot), sizes checked by
    config.check_devices. Auto axis types: Explicit ones break embedding gathers."""
    devices = list(devices) if devices is not None else jax.devices()
    data, fsdp = check_devices(config, len(devices))
    return jax.make_mesh((data, fsdp), BATCH_AXES, axis_types=(AxisType.Auto,) * 2,
                         devices=devices)


def param_spec(shape: tuple[int, ...], fsdp: int) -> P:
    """Shard the largest dimension divisible by `fsdp` over 'fsdp'; replicate otherwise."""
    if fsdp == 1 or not shape:
        return P()
    candidates = [d for d in np.argsort(shape)[::-1] if shape[d] % fsdp == 0]
    if not candidates:
        return P()
    spec = [None] * len(shape)
    spec[int(candidates[0])] = "fsdp"
    return P(*spec)


def tree_shardings(mesh: Mesh, tree: Any) -> Any:
    """NamedShardings for a tree of arrays or ShapeDtypeStructs (parameters, optimizer state)."""
    fsdp = mesh.shape["fsdp"]
    return jax.tree.map(lambda x: NamedSharding(mesh, param_spec(tuple(x.shape), fsdp)), tree)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, ndim: int, batch_axis: int) -> NamedSharding:
    """Shards axis `batch_axis` of an `ndim` array over all data-parallel devices."""
    spec = [None] * ndim
    spec[batch_axis] = BATCH_AXES
    return NamedSharding(mesh, P(*spec))


def to_global(local: dict[str, np.ndarray], mesh: Mesh, batch_axis: int) -> dict[str, jax.Array]:
    """Assembles each process's rows into global arrays sharded over the batch axes."""
    return {k: jax.make_array_from_process_local_data(
        batch_sharding(mesh, v.ndim, batch_axis), v) for k, v in local.items()}
