"""The activation stash: what the forward layer loop saves, per layer, for the backward pass.

A layer scan returns its saved residuals as loop outputs of shape [n_layers, ...], each written
once per iteration by a dynamic-update-slice (usually a `*dynamic_update_slice*` fusion taking the
stacked buffer as a parameter). Stacked weights and optimizer state are [n_layers, ...] too, but
pass through the loop unchanged and are only read (dynamic-slice), so they are not listed. Each
saved buffer is traced back to the body values written into it, so buffers written from the same
value (one tensor saved twice, or several functions of one tensor saved instead of recomputed) show
up as duplicates: that is where rematerialisation policies leak memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from minillm_jax.experiments.aot.hlo import region_of, trip_count
from minillm_jax.experiments.aot.hlo_text import Computation, Instruction, Module, parse_module

FORWARD_REGION = "forward layers"
TRANSPARENT = frozenset({"bitcast", "copy"})


@dataclass(frozen=True)
class StashBuffer:
    """One stacked loop output written every iteration, and where its contents come from.

    kind is "weight copy" when everything written comes from loop-invariant inputs (e.g. a bf16
    copy of a layer's weights), else "activation".
    """

    loop: str
    index: int
    dtype: str
    shape: str
    bytes: float
    sources: tuple[str, ...]
    duplicate_of: tuple[int, ...]
    kind: str


def _through(body: Computation, name: str) -> Instruction:
    """The value behind layout-only ops (bitcast, copy)."""
    instr = body.by_name[name]
    while instr.opcode in TRANSPARENT and instr.operands:
        instr = body.by_name[instr.operands[0]]
    return instr


def _carry_index(instr: Instruction, param: str) -> int | None:
    """The loop-carry index when `instr` is get-tuple-element of the body parameter, else None."""
    if instr.opcode == "get-tuple-element" and instr.operands == (param,):
        return int(instr.attr("index"))
    return None


def _source_name(instr: Instruction) -> str:
    """A stable name for a written value: `param[i]` / `producer[i]` for tuple elements."""
    if instr.opcode == "get-tuple-element":
        return f"{instr.operands[0]}[{instr.attr('index')}]"
    return instr.name


def _dus_writer(module: Module, body: Computation, value: Instruction) -> tuple | None:
    """(buffer operand name, other operand names, update elements, {operand: slice it gives
    the update}) of a DUS write, else None."""
    if value.opcode == "dynamic-update-slice":
        update = body.by_name[value.operands[1]]
        return value.operands[0], value.operands[1:], update.leaves[0].elements, {}
    if value.opcode != "fusion":
        return None
    fused = module.computations[value.attr("calls")]
    root = fused.root
    while root.opcode == "bitcast":
        root = fused.by_name[root.operands[0]]
    if root.opcode != "dynamic-update-slice":
        return None
    buffer = fused.by_name[root.operands[0]]
    while buffer.opcode == "bitcast":
        buffer = fused.by_name[buffer.operands[0]]
    if buffer.opcode != "parameter":
        return None
    k = int(buffer.args_text)
    others = value.operands[:k] + value.operands[k + 1:]
    update = fused.by_name[root.operands[1]]
    return value.operands[k], others, update.leaves[0].elements, _slice_of_update(fused, update,
                                                                                 value)


def _slice_of_update(fused: Computation, update: Instruction, fusion: Instruction,
                     ) -> dict[str, str]:
    """{fusion operand: slice} when the update is a static slice of one operand (through
    bitcasts): XLA merges two matmuls that share an input (w1 x and w2 x) into one, and each
    stacked buffer then takes its own half of the product, which is no duplicate."""
    while update.opcode == "bitcast" and update.operands:
        update = fused.by_name[update.operands[0]]
    if update.opcode != "slice":
        return {}
    source = fused.by_name[update.operands[0]]
    while source.opcode == "bitcast" and source.operands:
        source = fused.by_name[source.operands[0]]
    if source.opcode != "parameter":
        return {}
    return {fusion.operands[int(source.args_text)]: update.attr("slice") or ""}


def _is_index(instr: Instruction) -> bool:
    leaves = instr.leaves
    return len(leaves) == 1 and not leaves[0].dims and leaves[0].dtype[0] in "su"


def _loop_buffers(module: Module, loop: Instruction) -> list[StashBuffer]:
    body = module.computations[loop.attr("body")]
    param = body.parameters()[0].name
    outputs = body.root.operands
    invariant = {i for i, o in enumerate(outputs) if _carry_index(body.by_name[o], param) == i}
    trips = trip_count(loop)
    found = []
    for i, name in enumerate(outputs):
        value = _through(body, name)
        leaves = body.by_name[name].leaves
        leaf = leaves[0] if len(leaves) == 1 else None
        if i in invariant or leaf is None or not leaf.dims or leaf.dims[0] != trips:
            continue
        write = _dus_writer(module, body, value)
        if write is None or _carry_index(_through(body, write[0]), param) != i:
            continue
        _, others, update_elements, slices = write
        values = [(_through(body, o), slices.get(o, "")) for o in others]
        values = [(v, part) for v, part in values if not _is_index(v)]
        main = [(v, part) for v, part in values
                if sum(a.elements for a in v.leaves) >= update_elements] or values
        sources = tuple(sorted({_source_name(v) + (f" slice={part}" if part else "")
                                for v, part in main}))
        main = [v for v, _ in main]
        weight = all(_carry_index(v, param) in invariant for v in main) and bool(main)
        found.append((i, leaf, sources, "weight copy" if weight else "activation"))
    buffers = []
    for i, leaf, sources, kind in found:
        dups = tuple(j for j, _, other, _ in found if j != i and set(sources) & set(other))
        shape = f"{leaf.dtype}[{','.join(map(str, leaf.dims))}]"
        buffers.append(StashBuffer(loop.name, i, leaf.dtype, shape, leaf.bytes, sources, dups,
                                   kind))
    return buffers


def forward_loops(module: Module) -> list[Instruction]:
    """While loops with a known trip count whose op_name puts them in the forward layers."""
    return [i for c in module.computations.values() for i in c.instructions
            if i.opcode == "while" and trip_count(i) and region_of(i.op_name) == FORWARD_REGION]


def stash_of(module: Module) -> list[StashBuffer]:
    """The stacked buffers every forward layer loop of a parsed module writes."""
    return [b for loop in forward_loops(module) for b in _loop_buffers(module, loop)]


def stash(hlo_text: str) -> list[StashBuffer]:
    """The forward layer loop's stacked outputs written each iteration, shared sources flagged."""
    return stash_of(parse_module(hlo_text))
