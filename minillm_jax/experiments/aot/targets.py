"""GPUs to compile for without one: the target descriptions shipped with the package, the
compile-only devices of a topology, and the train step compiled for them.

XLA's GPU compiler only needs a description of the device (a `stream_executor.GpuTargetConfigProto`
in text form: SM count, shared memory, bandwidth, compute capability, cuDNN version) to run its
whole pipeline: fusion, GEMM rewriting, cuDNN custom calls, scheduling and buffer assignment.
`jax.experimental.topologies` (public API) turns that text into compile-only devices; a jitted
function lowered with shardings on those devices compiles exactly as on the GPU, except that no
autotuning runs (kernel choices may differ from a real run; memory and the program do not).
The CUDA plugin (the `cuda12` extra) must be installed; JAX_PLATFORMS=cpu keeps it from looking
for a GPU.

The descriptions live in minillm_jax/assets/gpu_targets/NAME.txtpb, each citing its source.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import time
from pathlib import Path
from typing import Any

from minillm_jax.config import ConfigError, TrainConfig
from minillm_jax.train.memory import HEADROOM
from minillm_jax.train.mfu import peak_for_kind

TARGETS_DIR = Path(__file__).resolve().parents[2] / "assets" / "gpu_targets"
# The share of device memory JAX's GPU allocator takes by default (XLA_PYTHON_CLIENT_MEM_FRACTION;
# jax.readthedocs.io "GPU memory allocation"): a step must fit in that, not in the whole card.
DEFAULT_MEM_FRACTION = 0.75
# Per-direction GPU-to-GPU bandwidth of each target's interconnect, for collectives: NVLink 3
# (A100: 600 GB/s total, 300 each way), NVLink 4 (H100/H200: 900 GB/s, 450 each way), PCIe 4.0
# x16 (L4: about 32 GB/s each way). NVIDIA datasheets.
LINK_BANDWIDTH = {"a100-40": 300e9, "a100-80": 300e9, "h100": 450e9, "h200": 450e9, "l4": 32e9}
PLUGIN_HINT = ('compiling for a GPU needs the CUDA plugin: pip install -e ".[cuda12]" (about 5 GB '
               "of CUDA wheels; no GPU needed)")


@dataclasses.dataclass(frozen=True)
class GpuTarget:
    """One GPU described for the compiler, with the numbers the time model needs."""

    name: str
    text: str  # the GpuTargetConfigProto text
    device_kind: str
    memory_bytes: int
    bandwidth: float  # HBM bytes/s
    link_bandwidth: float  # bytes/s each way between GPUs
    source: str

    @property
    def peak_flops(self) -> float | None:
        """Dense bf16 tensor-core FLOP/s (minillm_jax/train/mfu.py's datasheet table)."""
        return peak_for_kind(self.device_kind)

    @property
    def usable_bytes(self) -> int:
        """What a step may need on this card for the trainer to start it: JAX's allocator share
        (XLA_PYTHON_CLIENT_MEM_FRACTION, default 0.75 of the device) times the headroom the
        trainer's own pre-flight check leaves for cuBLAS/cuDNN workspaces
        (minillm_jax.train.memory.check_fits), so "fits" here means the run starts there."""
        fraction = float(os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", DEFAULT_MEM_FRACTION))
        return int(self.memory_bytes * fraction * HEADROOM)


def target_names() -> list[str]:
    return sorted(p.stem for p in TARGETS_DIR.glob("*.txtpb"))


def _field(text: str, name: str, kind: type) -> Any:
    match = re.search(rf"\b{name}:\s*(\"[^\"]*\"|[0-9.e+]+)", text)
    if match is None:
        raise ConfigError(f"the GPU target description has no {name} field: use one of "
                          f"{', '.join(target_names())} or a GpuTargetConfigProto text with it")
    value = match.group(1).strip('"')
    return kind(float(value)) if kind is int else kind(value)


def load_target(name: str | None = None, config_file: str | None = None) -> GpuTarget:
    """A shipped target by name (`target_names()`), or any GPU from a text proto file."""
    if config_file:
        path = Path(config_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"--target-config {config_file}: no such file")
        text, label, source = path.read_text(), path.stem, str(path)
    else:
        path = TARGETS_DIR / f"{name}.txtpb"
        if not path.is_file():
            raise ConfigError(f"unknown GPU target {name!r}: use one of "
                              f"{', '.join(target_names())}, or --target-config FILE")
        text, label = path.read_text(), str(name)
        source = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                       if line.startswith("# Source:")), str(path))
    return GpuTarget(name=label, text=text,
                     device_kind=_field(text, "device_description_str", str),
                     memory_bytes=_field(text, "device_memory_size", int),
                     bandwidth=_field(text, "memory_bandwidth", float),
                     link_bandwidth=LINK_BANDWIDTH.get(label, 32e9), source=source)


def target_for_kind(device_kind: str) -> GpuTarget | None:
    """The shipped target whose device is `device_kind` (a live GPU's bandwidth for the time
    model), or None."""
    return next((t for t in map(load_target, target_names()) if t.device_kind == device_kind),
                None)


def cuda_plugin_missing() -> bool:
    """True when JAX's CUDA plugin (jax[cuda12] or jax[cuda13]) is not installed."""
    return not any(importlib.util.find_spec(name) is not None
                   for name in ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_plugins.xla_cuda12",
                                "jax_plugins.xla_cuda13"))


def compile_on_host() -> None:
    """Keeps JAX on the host CPU (unless JAX_PLATFORMS says otherwise), so that the CUDA plugin
    registers for compile-only use instead of failing to find a GPU. Call before JAX's first
    backend use: the plugin is set up once per process."""
    import jax

    if not os.environ.get("JAX_PLATFORMS"):
        jax.config.update("jax_platforms", "cpu")


def topology_devices(target: GpuTarget, n_devices: int = 1) -> tuple[Any, ...]:
    """`n_devices` compile-only devices of `target` (one host, e.g. an 8-GPU node)."""
    from jax.experimental import topologies

    try:
        topology = topologies.get_topology_desc(platform="cuda", target_config=target.text,
                                                topology=f"1x1x{n_devices}")
    except NotImplementedError as err:  # the CUDA client failed to start (no GPU, no cpu pin)
        raise ConfigError(f"JAX's CUDA plugin did not start ({err}): set JAX_PLATFORMS=cpu "
                          "before JAX starts to compile for a GPU without one") from err
    return tuple(topology.devices)


@dataclasses.dataclass(frozen=True)
class CompiledStep:
    """A train step compiled for a target: the executable (never run), its run and timing."""

    compiled: Any
    run: Any  # minillm_jax.train.build.Run
    compile_s: float


def compile_train_step(config: TrainConfig, target: GpuTarget, n_devices: int = 1,
                       ) -> CompiledStep:
    """`config`'s train step compiled for `n_devices` GPUs of `target` (the config's data/FSDP
    mesh over them), with every platform-dependent field resolved for the GPU."""
    from minillm_jax.train.build import Target, build_run

    start = time.perf_counter()
    run = build_run(config, Target(topology_devices(target, n_devices), live=False))
    compiled = run.lower_train_step().compile()
    return CompiledStep(compiled, run, time.perf_counter() - start)
