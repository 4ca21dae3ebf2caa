"""The activation stash on a hand-cut excerpt of a compiled forward layer loop."""

from __future__ import annotations

import re

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


def _sliced(text: str, computation: str, param: str, columns: str) -> str:
    """STASH_HLO with `computation`'s update taken as a static slice of `param`'s columns."""
    head, rest = text.split(f"%{computation} (", 1)
    body, tail = rest.split("\n}\n", 1)
    lines = [line for line in body.splitlines()
             if not line.strip().startswith(("%logistic", "%mul.732", "%copy.302"))]
    body = "\n".join(lines)
    body = body.replace(f"%param_2.{param} = bf16[33792,2048]{{1,0}} parameter(2)",
                        f"%param_2.{param} = bf16[33792,2048]{{1,0}} parameter(2)\n"
                        f"  %slice.{param} = bf16[33792,2048]{{1,0}} slice(%param_2.{param}), "
                        f"slice={{[0:33792], [{columns}]}}")
    body = re.sub(r"(%bitcast\.6\d\.1 = \S+ bitcast\()[^)]*\)", rf"\1%slice.{param})", body)
    body = re.sub(r"dynamic-update-slice\((%param_0\.\d+), %(copy\.302|bitcast\.6\d\.1)",
                  r"dynamic-update-slice(\1, %bitcast.6X.1", body)
    body = re.sub(r"%bitcast\.6\d\.1 =", "%bitcast.6X.1 =", body)
    return f"{head}%{computation} ({body}\n}}\n{tail}"


def test_halves_of_one_merged_product_are_not_duplicates():
    """XLA merges w1 x and w2 x into one product when they share x; each stack then takes its
    own slice of it: different values, no duplicate. The same slice twice is one."""
    halves = _sliced(_sliced(STASH_HLO, "fused_dynamic_update_slice.5", "794", "0:2048"),
                     "fused_dynamic_update_slice.7", "778", "2048:4096")
    found = {b.index: b for b in stash(halves)}
    assert found[3].sources != found[4].sources
    assert (found[3].duplicate_of, found[4].duplicate_of) == ((), ())
    same = _sliced(_sliced(STASH_HLO, "fused_dynamic_update_slice.5", "794", "0:2048"),
                   "fused_dynamic_update_slice.7", "778", "0:2048")
    found = {b.index: b for b in stash(same)}
    assert (found[3].duplicate_of, found[4].duplicate_of) == ((4,), (3,))
