"""A roofline time model for the kernels of a compiled step: each kernel is bound by math or memory.

Every kernel takes max(FLOPs / matmul peak, bytes / HBM bandwidth) plus a fixed launch cost, and the
step is the sum over kernels (launches x time): kernels run one after another on one stream. Only
GEMMs and attention use the matmul peak; other kernels are charged their bytes only. Collectives
take bytes / link bandwidth x the ring factor (2(n-1)/n for all-reduce, (n-1)/n for all-gather,
reduce-scatter and all-to-all, 1 for a permute) and are not overlapped with compute, so on several
devices the prediction is an upper bound where XLA overlaps them. MFU is the caller's business.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from minillm_jax.experiments.aot.hlo import Kernel

MATMUL_KINDS = ("gemm", "attention")
# Element types -> the peak table key they run at.
PEAK_KEY = {"bf16": "bf16", "f16": "bf16", "f32": "f32", "f64": "f64"}


@dataclass(frozen=True)
class Peaks:
    """Dense peak rates of one GPU.

    matmul_flops is keyed "bf16" (also used for f16), "f32" (XLA runs f32 dots as TF32 by default
    on Ampere and later, so this is the dense TF32 peak), "f8"; launch_s is the fixed cost per
    kernel; collective_bandwidth is per device, per direction.
    """

    name: str
    matmul_flops: Mapping[str, float]
    bandwidth: float
    launch_s: float = 3e-6
    collective_bandwidth: float = 450e9


# Dense (no sparsity) SXM datasheet numbers. launch_s = 3 us is an assumption: a few microseconds of
# launch and tail per kernel, less under CUDA graphs. NVLink: 900 GB/s (H100/H200, NVLink 4) and
# 600 GB/s (A100, NVLink 3) total, i.e. 450e9 and 300e9 B/s per direction.
H100 = Peaks("H100 SXM", {"bf16": 989e12, "f32": 494.7e12, "f8": 1979e12}, 3.35e12, 3e-6, 450e9)
H200 = Peaks("H200 SXM", {"bf16": 989e12, "f32": 494.7e12, "f8": 1979e12}, 4.8e12, 3e-6, 450e9)
A100 = Peaks("A100 SXM 80GB", {"bf16": 312e12, "f32": 156e12}, 2.039e12, 3e-6, 300e9)


def matmul_peak(dtypes: Iterable[str], peaks: Peaks) -> float:
    """The peak for a product of these operand types: the slowest operand's (unknown -> f32)."""
    rates = []
    for dtype in dtypes:
        key = "f8" if dtype.startswith("f8") else PEAK_KEY.get(dtype, "f32")
        rates.append(peaks.matmul_flops.get(key, peaks.matmul_flops["f32"]))
    return min(rates) if rates else peaks.matmul_flops["bf16"]


def ring_factor(collective: str, n_devices: int) -> float:
    """Bytes each device sends per byte of the full buffer, for a ring over n devices."""
    if n_devices <= 1:
        return 0.0
    if collective == "all-reduce":
        return 2 * (n_devices - 1) / n_devices
    if collective == "collective-permute":
        return 1.0
    return (n_devices - 1) / n_devices


def kernel_time(k: Kernel, peaks: Peaks, n_devices: int = 1) -> float:
    """Seconds for one launch of a kernel."""
    if k.kind == "collective":
        ring = ring_factor(k.detail, n_devices)
        return k.bytes / peaks.collective_bandwidth * ring + peaks.launch_s
    memory = k.bytes / peaks.bandwidth
    if k.kind in MATMUL_KINDS:
        return max(k.flops / matmul_peak(k.operand_dtypes, peaks), memory) + peaks.launch_s
    return memory + peaks.launch_s


def is_memory_bound(k: Kernel, peaks: Peaks) -> bool:
    """Whether HBM traffic, not math, sets the kernel's time (all non-matmul, non-collective)."""
    if k.kind == "collective":
        return False
    if k.kind in MATMUL_KINDS:
        return k.bytes / peaks.bandwidth >= k.flops / matmul_peak(k.operand_dtypes, peaks)
    return True


@dataclass
class Prediction:
    """A predicted step: totals by kernel kind and by region as (launches, seconds, FLOPs, bytes).

    top holds the 10 kernels with the most total time (launches x time), with that time;
    matmul_s is GEMM + attention time, memory_bound_s the time of memory-bound kernels,
    launch_s the fixed launch cost inside step_s.
    """

    step_s: float
    by_kind: dict[str, tuple[int, float, float, float]]
    by_region: dict[str, tuple[int, float, float, float]]
    top: list[tuple[Kernel, float]]
    matmul_s: float
    memory_bound_s: float
    collective_s: float = 0.0
    launch_s: float = 0.0
    flops: float = 0.0
    bytes: float = 0.0


def _add(table: dict, key: str, count: int, seconds: float, flops: float, nbytes: float) -> None:
    c, s, f, b = table.get(key, (0, 0.0, 0.0, 0.0))
    table[key] = (c + count, s + seconds, f + flops, b + nbytes)


def predict(kernels: Iterable[Kernel], peaks: Peaks, n_devices: int = 1) -> Prediction:
    """The roofline prediction of one step from its kernels."""
    by_kind: dict = {}
    by_region: dict = {}
    timed = []
    matmul_s = memory_s = collective_s = launches = 0.0
    for k in kernels:
        total = k.count * kernel_time(k, peaks, n_devices)
        timed.append((k, total))
        _add(by_kind, k.kind, k.count, total, k.count * k.flops, k.count * k.bytes)
        _add(by_region, k.region, k.count, total, k.count * k.flops, k.count * k.bytes)
        matmul_s += total if k.kind in MATMUL_KINDS else 0.0
        memory_s += total if is_memory_bound(k, peaks) else 0.0
        collective_s += total if k.kind == "collective" else 0.0
        launches += k.count
    step = sum(t for _, t in timed)
    top = sorted(timed, key=lambda kt: -kt[1])[:10]
    flops = sum(v[2] for v in by_kind.values())
    nbytes = sum(v[3] for v in by_kind.values())
    return Prediction(step, by_kind, by_region, top, matmul_s, memory_s, collective_s,
                      launches * peaks.launch_s, flops, nbytes)
