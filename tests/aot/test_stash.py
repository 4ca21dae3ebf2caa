"""The activation stash on a hand-cut excerpt of a compiled forward layer loop."""

from __future__ import annotations

from minillm_jax.experiments.aot.stash import stash
from tests.aot.fixtures import STASH_HLO


def test_stash_lists_written_stacks_and_flags_shared_sources():
    found = {b.index: b for b in stash(STASH_HLO)}
    # 2 is the f32 w1 stack (read by dynamic-slice) and 6 is carried through unwritten: not saves.
    assert sorted(found) == [3, 4, 5, 7]
    layer = 18 * 66 * 512 * 2048 * 2
    assert [found[i].bytes for i in (3, 4, 5)] == [layer] * 3
    # silu(w1 out) and w1 out itself are both saved: two stacks written from one value.
    assert found[3].sources == found[4].sources == ("gemm_fusion_dot.57",)
    assert (found[3].duplicate_of, found[4].duplicate_of) == ((4,), (3,))
    assert found[5].sources == ("loop_multiply_fusion",) and found[5].duplicate_of == ()
    assert {found[i].kind for i in (3, 4, 5)} == {"activation"}
    copy = found[7]
    assert (copy.kind, copy.sources, copy.dtype, copy.bytes) == (
        "weight copy", ("arg_tuple.19[2]",), "bf16", 18 * 768 * 2048 * 2)
    assert {b.loop for b in found.values()} == {"while.170"}
