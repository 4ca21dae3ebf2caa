"""Kernels parsed from HLO text: counts, FLOPs and bytes against numbers worked out by hand."""

from __future__ import annotations

import pytest

from minillm_jax.experiments.aot.hlo import parse_kernels, region_of
from minillm_jax.experiments.aot.hlo_text import parse_module, parse_type
from tests.aot.fixtures import STASH_HLO, STEP_HLO, UNKNOWN_TRIP_HLO


@pytest.fixture(scope="module")
def kernels():
    return {k.name: k for k in parse_kernels(STEP_HLO)}


def test_tuple_types_with_index_comments_and_layouts():
    leaves = parse_type("(s32[], f32[2,3]{1,0}, /*index=2*/pred[4]{0}, u8[0]{0})")
    assert [(a.dtype, a.dims) for a in leaves] == [("s32", ()), ("f32", (2, 3)), ("pred", (4,)),
                                                   ("u8", (0,))]
    assert sum(a.bytes for a in leaves) == 4 + 24 + 4 + 0


def test_module_structure():
    module = parse_module(STASH_HLO)
    assert module.entry == "main.133"
    loop = module.entry_computation.root
    assert loop.opcode == "while" and len(loop.leaves) == 8
    assert loop.called == ("region_5.45", "region_2.44")
    assert loop.backend_config["known_trip_count"] == {"n": "18"}


def test_only_launching_instructions_are_kernels(kernels):
    # Parameters, constants, tuples, the while, the condition's compare (known trip count) and the
    # -done half of the all-reduce launch nothing of their own.
    assert list(kernels) == [
        "gemm_fusion_dot.1", "custom-call.1", "loop_add_fusion", "dot_product_attention_fwd.1",
        "loop_multiply_fusion", "loop_dynamic_update_slice_fusion", "loop_add_fusion.1",
        "all-reduce-start"]
    assert [k.kind for k in kernels.values()] == [
        "gemm", "gemm", "fusion", "attention", "fusion", "fusion", "fusion", "collective"]


def test_triton_gemm_fusion(kernels):
    k = kernels["gemm_fusion_dot.1"]
    assert k.detail == "kCustom:__triton_nested_gemm_fusion"
    assert k.flops == 2 * 8192 * 2048 * 4096
    assert k.bytes == (8192 * 4096 + 4096 * 2048 + 8192 * 2048) * 2
    assert k.operand_dtypes == ("bf16", "bf16") and k.count == 1


def test_cublas_gemm_leaves_out_its_workspace(kernels):
    k = kernels["custom-call.1"]
    assert k.detail == "__cublas$lt$matmul"
    assert k.flops == 2 * 8192 * 2048 * 4096
    assert k.bytes == (8192 * 4096 + 4096 * 2048) * 2 + 8192 * 2048 * 4


def test_elementwise_fusion(kernels):
    k = kernels["loop_add_fusion"]
    assert (k.detail, k.flops, k.bytes) == ("kLoop", 1048576, 3 * 1048576 * 4)


def test_causal_flash_attention_flops(kernels):
    k = kernels["dot_product_attention_fwd.1"]
    b, h, t, d = 2, 4, 256, 64
    assert k.flops == 4 * b * h * t * t * d / 2
    assert k.bytes == 3 * (b * t * h * d * 2) + b * t * h * d * 2 + b * h * t * 4


def test_loop_body_counts_trip_count_times(kernels):
    assert [kernels[n].count for n in ("loop_multiply_fusion", "loop_dynamic_update_slice_fusion",
                                       "loop_add_fusion.1")] == [3, 3, 3]
    assert kernels["loop_multiply_fusion"].bytes == 2 * 64 * 4


def test_dynamic_update_slice_moves_only_the_update(kernels):
    # Reads the f32[64] update and the s32 index, writes 64 floats: the [3,64] buffer is in place.
    assert kernels["loop_dynamic_update_slice_fusion"].bytes == 64 * 4 + 4 + 64 * 4


def test_collective_pair_is_one_kernel(kernels):
    k = kernels["all-reduce-start"]
    assert (k.detail, k.count, k.bytes) == ("all-reduce", 1, 1048576 * 4)


def test_regions_from_op_names_and_loops(kernels):
    assert kernels["gemm_fusion_dot.1"].region == "optimizer and rest"
    assert kernels["custom-call.1"].region == "backward layers"
    assert kernels["loop_add_fusion"].region == "loss"
    assert kernels["loop_add_fusion.1"].region == "forward layers"  # no op_name: from its loop
    assert region_of("x/jvp()/while/body/dot", ("x/transpose(jvp(Transformer.features))/while",)) \
        == "backward layers"


def test_unknown_trip_count_counts_once_and_says_so():
    found = {k.name: k for k in parse_kernels(UNKNOWN_TRIP_HLO)}
    assert found["loop_dynamic_update_slice_fusion"].count == 1
    assert "trip count unknown" in found["loop_dynamic_update_slice_fusion"].notes
    assert found["loop_compare_fusion"].count == 1  # the condition now runs, and is listed
    assert found["gemm_fusion_dot.1"].notes == ""


def test_sliced_weight_read_and_stacked_write_in_a_real_loop():
    found = {k.name: k for k in parse_kernels(STASH_HLO)}
    # bf16 copy of one layer's w1: reads its f32[768,2048] slice, writes the bf16 slice.
    assert found["loop_dynamic_update_slice_fusion.29"].bytes == 768 * 2048 * 4 + 4 + 768 * 2048 * 2
    # silu(w1 output) saved into the [18, ...] stack: reads and writes one layer's worth.
    assert found["loop_dynamic_update_slice_fusion.5"].bytes == 2 * 33792 * 2048 * 2 + 4
    assert found["gemm_fusion_dot.57"].flops == 2 * 33792 * 2048 * 768
    assert {k.count for k in found.values()} == {18}
    assert {k.region for k in found.values()} == {"forward layers"}
