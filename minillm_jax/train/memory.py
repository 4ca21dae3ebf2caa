"""Will a compiled step fit in device memory? Checked before step 0, from XLA's own estimate.

A step that does not fit would otherwise die inside XLA with a RESOURCE_EXHAUSTED traceback
after data loading and state allocation; its compiled memory analysis (arguments + outputs +
temporaries - donated aliases) says so up front.
"""

from __future__ import annotations

import os
from typing import Any

import jax

from minillm_jax.config import ConfigError, TrainConfig

GIB = 2**30
# XLA's estimate leaves out the runtime's own workspace (cuBLAS/cuDNN scratch, fragmentation).
HEADROOM = 0.95



def advice(config: TrainConfig) -> str:
    """What would shrink this run's step, in the order worth trying."""
    steps = []
    if config.execution.loss_chunk_size == 0:
        steps.append("set loss_chunk_size=4096 (the logits are never held whole)")
    if config.data.batch_size > 1:
        steps.append(f"raise acc_steps (now {config.data.acc_steps}) while lowering batch_size "
                     f"(now {config.data.batch_size}): same tokens per step, smaller micro-batches")
    if config.execution.remat != "full":
        steps.append("set remat=full (recompute activations in the backward pass)")
    if config.execution.residual_dtype == "float32" and config.execution.compute_dtype != "float32":
        steps.append("set residual_dtype=bfloat16")
    steps.append(f"or lower sequence_length (now {config.model.sequence_length})")
    return "; ".join(steps)


def step_bytes(compiled: Any) -> int | None:
    """Device bytes a compiled step needs (per device), or None if the backend does not say."""
    try:
        mem = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend reports it
        return None
    if mem is None:
        return None
    return int(mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
               - mem.alias_size_in_bytes)


def device_bytes(device: jax.Device | None = None) -> tuple[int, str]:
    """(memory one device can use, a description). Accelerators report their limit; CPU devices
    share the host's RAM."""
    device = device or jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"{device.device_kind}"
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    local = max(jax.local_device_count(), 1)
    what = "the host's RAM" + (f" shared by {local} CPU devices" if local > 1 else "")
    return ram // local, what


def check_fits(needs: dict[str, int | None], advice: str,
               device: jax.Device | None = None) -> None:
    """Raises ConfigError (one line: what is needed, what there is, what to change) when any
    compiled step in `needs` ({"train step": bytes, ...}) exceeds the device's memory."""
    limit, what = device_bytes(device)
    for name, need in needs.items():
        if need is not None and need > HEADROOM * limit:
            raise ConfigError(
                f"the {name} needs {need / GIB:.2f} GiB per device but {what} has "
                f"{limit / GIB:.2f} GiB: {advice}")


def describe(needs: dict[str, int | None], device: jax.Device | None = None) -> str:
    """'train step 1.23 GiB, eval step 0.45 GiB of 80.00 GiB (H100)' for the log."""
    limit, what = device_bytes(device)
    parts = [f"{name} {need / GIB:.2f} GiB" if need is not None else f"{name} unknown"
             for name, need in needs.items()]
    return f"memory per device: {', '.join(parts)} of {limit / GIB:.2f} GiB ({what})"
