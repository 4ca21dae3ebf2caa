"""The roofline time model against hand computations on a small synthetic step."""

from __future__ import annotations

import pytest

from minillm_jax.experiments.aot.hlo import Kernel, parse_kernels
from minillm_jax.experiments.aot.roofline import H100, Peaks, kernel_time, matmul_peak, predict
from tests.aot.fixtures import STEP_HLO

PEAKS = Peaks("test", {"bf16": 1e15, "f32": 5e14}, bandwidth=2e12, launch_s=1e-6,
              collective_bandwidth=1e11)


@pytest.fixture(scope="module")
def kernels():
    return {k.name: k for k in parse_kernels(STEP_HLO)}


def test_bf16_gemm_is_compute_bound(kernels):
    flops, nbytes = 2 * 8192 * 2048 * 4096, (8192 * 4096 + 4096 * 2048 + 8192 * 2048) * 2
    assert flops / 1e15 > nbytes / 2e12
    assert kernel_time(kernels["gemm_fusion_dot.1"], PEAKS) == pytest.approx(flops / 1e15 + 1e-6)


def test_elementwise_fusion_is_memory_bound(kernels):
    assert kernel_time(kernels["loop_add_fusion"], PEAKS) == pytest.approx(3 * 4 * 1048576 / 2e12
                                                                            + 1e-6)


def test_f32_gemm_runs_at_the_tf32_peak():
    k = Kernel("d", "gemm", "dot", 1, 1e12, 0.0, ("f32", "f32"), "loss", "", "")
    assert matmul_peak(("bf16", "f32"), PEAKS) == 5e14
    assert kernel_time(k, PEAKS) == pytest.approx(1e12 / 5e14 + 1e-6)
    assert H100.matmul_flops["bf16"] == 989e12 and H100.bandwidth == 3.35e12


def test_all_reduce_ring_factor(kernels):
    k = kernels["all-reduce-start"]
    ring = 2 * 7 / 8
    assert kernel_time(k, PEAKS, n_devices=8) == pytest.approx(4 * 1048576 / 1e11 * ring + 1e-6)
    gather = Kernel("g", "collective", "all-gather", 1, 0.0, 8e6, (), "loss", "", "")
    assert kernel_time(gather, PEAKS, n_devices=4) == pytest.approx(8e6 / 1e11 * 3 / 4 + 1e-6)
    assert kernel_time(k, PEAKS) == pytest.approx(1e-6)  # one device: nothing to send


def test_predict_sums_launches_times_kernel_time(kernels):
    p = predict(kernels.values(), PEAKS)
    gemm = 2 * 8192 * 2048 * 4096 / 1e15 + 1e-6
    attention = max(4 * 2 * 4 * 256 * 256 * 64 / 2 / 1e15, 1056768 / 2e12) + 1e-6
    loop = 3 * ((512 + 516 + 8) / 2e12 + 3e-6)
    add, all_reduce = 12582912 / 2e12 + 1e-6, 1e-6
    assert p.matmul_s == pytest.approx(2 * gemm + attention)
    assert p.step_s == pytest.approx(2 * gemm + attention + loop + add + all_reduce)
    assert p.by_kind["gemm"][0] == 2 and p.by_kind["fusion"][0] == 1 + 9
    assert p.by_region["forward layers"][0] == 1 + 9
    assert p.top[0][0].kind == "gemm" and len(p.top) == 8
    assert p.memory_bound_s == pytest.approx(p.step_s - 2 * gemm - all_reduce)
