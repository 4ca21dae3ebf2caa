"""The kernels one training step launches, read from the optimized (scheduled) HLO text.

A deviceless GPU compile returns no cost analysis, so FLOPs and HBM bytes are counted here, per
kernel, from shapes. The walk starts at ENTRY:
- a `while` body counts `known_trip_count` times (nested loops multiply); with a known trip count
  XLA's GPU while loop does not run the condition, so condition kernels are not counted. A loop
  without a known trip count counts its body and condition once and its kernels carry a note;
- `call` bodies and every `conditional` branch count once (a conditional's branches are all
  listed, though one runs);
- a `fusion` is one kernel, its fused computation (nested fusions included) lives inside it; an
  `async-start` contributes the kernels of its wrapped computation; a collective's `-start`/`-done`
  pair is one kernel.

FLOPs: a dot is 2 x prod(result dims) x prod(lhs contracting dims) (batch dims are in the result);
cuDNN flash attention forward is 2·B·H·Tq·Tk·(Dqk + Dv) (4·B·H·Tq·Tk·D when Dqk = Dv: S = QKᵀ and
PV), halved for a causal mask, and its backward 2.5x that (S recomputed, then dV, dP, dQ, dK: five
products against the forward's two). Other kernels count ~1 FLOP per output element: they are
memory bound and the roofline uses only their bytes.

Bytes (HBM traffic per launch): every operand read once and the result written once, except that a
fusion parameter read only through dynamic-slice / slice / gather reads only the slices, a
dynamic-update-slice into a parameter (in place, e.g. a loop's stacked [18, ...] buffers) writes
only the update and does not read the buffer, a standalone dynamic-slice / dynamic-update-slice
moves only the slice, and a custom call's scratch workspace (a trailing s8/u8 vector) is not
traffic. Ignored: caches and L2 reuse, operands re-read per tile (GEMMs, broadcasts), padding.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from minillm_jax.experiments.aot.hlo_text import Computation, Instruction, Module, parse_module

KINDS = ("gemm", "attention", "fusion", "copy", "collective", "other")

# Instructions that launch no device work of their own.
NOT_KERNELS = frozenset({
    "parameter", "constant", "get-tuple-element", "tuple", "bitcast", "while", "call",
    "conditional", "opt-barrier", "optimization-barrier", "after-all", "partition-id",
    "replica-id", "add-dependency", "async-start", "async-update", "async-done", "copy-done",
    "send-done", "recv-done", "domain",
})
COLLECTIVES = frozenset({
    "all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute",
    "collective-broadcast", "ragged-all-to-all",
})
GEMM_TARGETS = ("__cublas$gemm", "__cublas$lt$matmul")
ATTENTION_PREFIX = "__cudnn$fmha"
SLICING = frozenset({"dynamic-slice", "slice", "gather"})
COPY_ONLY = frozenset({"parameter", "bitcast", "copy", "transpose"})

# Region of a kernel: the first rule whose pattern matches, tried on the op_names of the enclosing
# while loops (innermost first) and then on the kernel's own op_name. Data, so a renamed model
# function needs one edit. The embedding and the final norm, outside the scan, count as layers.
REGION_RULES: tuple[tuple[str, str], ...] = (
    ("backward layers", r"transpose\(jvp\(Transformer\.features\)\)"),
    ("forward layers", r"jvp\(Transformer\.features\)"),
    ("loss", r"jvp\(\)"),
)
DEFAULT_REGION = "optimizer and rest"
REGIONS = tuple(r for r, _ in REGION_RULES) + (DEFAULT_REGION,)


@dataclass(frozen=True)
class Kernel:
    """One kernel of the step: how often it launches and what one launch costs."""

    name: str
    kind: str
    detail: str
    count: int
    flops: float
    bytes: float
    operand_dtypes: tuple[str, ...]
    region: str
    op_name: str
    shape: str
    notes: str = ""


def region_of(op_name: str, loops: tuple[str, ...] = ()) -> str:
    """The region from the enclosing loops' op_names (innermost last), then the op's own."""
    for text in (*reversed(loops), op_name):
        for region, pattern in REGION_RULES:
            if re.search(pattern, text):
                return region
    return DEFAULT_REGION


def short_type(text: str, limit: int = 80) -> str:
    """A type without layouts and index comments, cut to `limit` characters."""
    text = re.sub(r"/\*.*?\*/", "", text)
    text = re.sub(r"\{[^{}]*\}", "", text).replace(" ,", ",")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def trip_count(instr: Instruction) -> int | None:
    """A while loop's known trip count from its backend_config, else None."""
    n = instr.backend_config.get("known_trip_count", {}).get("n")
    return int(n) if n is not None else None


def _base(opcode: str) -> str:
    return opcode[:-len("-start")] if opcode.endswith("-start") else opcode


def _operand_bytes(comp: Computation, instr: Instruction) -> list[float]:
    return [comp.by_name[o].bytes if o in comp.by_name else 0.0 for o in instr.operands]


def called_computations(module: Module, comp: Computation) -> list[Computation]:
    """A computation and every computation it calls, recursively (nested fusions, reducers)."""
    out = [comp]
    for instr in comp.instructions:
        for name in instr.called:
            if name in module.computations:
                out += called_computations(module, module.computations[name])
    return out


def _dot_flops(comp: Computation, dot: Instruction) -> tuple[float, tuple[str, ...]]:
    lhs, rhs = (comp.by_name[o] for o in dot.operands[:2])
    contracting = math.prod(lhs.leaves[0].dims[d] for d in dot.dims_attr("lhs_contracting_dims"))
    dtypes = tuple(x.leaves[0].dtype for x in (lhs, rhs))
    return 2.0 * dot.leaves[0].elements * contracting, dtypes


def _gemm_call_flops(comp: Computation, call: Instruction) -> tuple[float, tuple[str, ...]]:
    dims = call.backend_config.get("gemm_backend_config", {}).get("dot_dimension_numbers", {})
    lhs, rhs = (comp.by_name[o] for o in call.operands[:2])
    lhs_contracting = dims.get("lhs_contracting_dimensions", [])
    contracting = math.prod(lhs.leaves[0].dims[int(d)] for d in lhs_contracting)
    dtypes = (lhs.leaves[0].dtype, rhs.leaves[0].dtype)
    return 2.0 * call.leaves[0].elements * contracting, dtypes


def attention_flops(comp: Computation, call: Instruction) -> float:
    """FLOPs of one cuDNN flash-attention call (formula in the module docstring), else 0."""
    config = call.backend_config.get("cudnn_fmha_backend_config", {})
    scores = [int(d) for d in config.get("intermediate_tensor_shape", {}).get("dimensions", [])]
    if len(scores) != 4 or len(call.operands) < 3:
        return 0.0
    b, h, tq, tk = scores
    q, v = comp.by_name[call.operands[0]], comp.by_name[call.operands[2]]
    d_qk, d_v = q.leaves[0].elements / (b * h * tq), v.leaves[0].elements / (b * h * tk)
    forward = 2.0 * b * h * tq * tk * (d_qk + d_v)
    if config.get("mask_type", "NO_MASK").upper().startswith("CAUSAL"):
        forward /= 2
    target = call.attr("custom_call_target") or ""
    return forward * (2.5 if "Backward" in target else 1.0)


def _strip_bitcasts(comp: Computation, instr: Instruction) -> Instruction:
    while instr.opcode == "bitcast" and instr.operands:
        instr = comp.by_name[instr.operands[0]]
    return instr


def _uses(comp: Computation, name: str) -> list[tuple[Instruction, str]]:
    """Users of a value seen through bitcasts, each with the name it is used through."""
    out = []
    for user in comp.users(name):
        if user.opcode == "bitcast":
            out += _uses(comp, user.name)
        else:
            out.append((user, name))
    return out


def _root_elements(comp: Computation) -> list[Instruction]:
    root = _strip_bitcasts(comp, comp.root)
    if root.opcode == "tuple":
        return [_strip_bitcasts(comp, comp.by_name[o]) for o in root.operands]
    return [root]


def fusion_bytes(fused: Computation) -> float:
    """HBM bytes of one launch of a fusion (rules in the module docstring)."""
    in_place = set()
    written = 0.0
    for element in _root_elements(fused):
        buffer = (_strip_bitcasts(fused, fused.by_name[element.operands[0]])
                  if element.operands else None)
        if element.opcode == "dynamic-update-slice" and buffer.opcode == "parameter":
            in_place.add(buffer.name)
            written += fused.by_name[element.operands[1]].bytes
        else:
            written += element.bytes
    read = 0.0
    for param in fused.parameters():
        uses = _uses(fused, param.name)
        if param.name in in_place and all(u.opcode == "dynamic-update-slice" for u, _ in uses):
            continue
        if uses and all(u.opcode in SLICING and u.operands[0] == via for u, via in uses):
            read += sum(u.bytes for u, _ in uses)
        else:
            read += param.bytes
    return read + written


def _result_bytes(instr: Instruction) -> float:
    """Result bytes without a custom call's trailing scratch workspace."""
    leaves = instr.leaves
    if instr.opcode == "custom-call" and len(leaves) > 1 and leaves[-1].dtype in ("s8", "u8") \
            and len(leaves[-1].dims) == 1:
        leaves = leaves[:-1]
    return sum(a.bytes for a in leaves)


def _collective_bytes(comp: Computation, instr: Instruction) -> float:
    """The larger of what goes in and what comes out: the full buffer the ring moves."""
    result = instr.bytes
    if instr.opcode.endswith("-start"):
        done = next((u for u in comp.users(instr.name) if u.opcode.endswith("-done")), None)
        result = done.bytes if done else 0.0
    return max(sum(_operand_bytes(comp, instr)), result)


def _fusion_kernel(module: Module, comp: Computation, instr: Instruction) -> tuple:
    fused = module.computations[instr.attr("calls")]
    backend = instr.backend_config.get("fusion_backend_config", {}).get("kind", "")
    detail = f"{instr.attr('kind')}:{backend}" if backend else (instr.attr("kind") or "")
    dots = [(c, i) for c in called_computations(module, fused) for i in c.instructions
            if i.opcode == "dot"]
    if dots:
        counted = [_dot_flops(c, dot) for c, dot in dots]
        return "gemm", detail, sum(f for f, _ in counted), fusion_bytes(fused), counted[-1][1]
    elements = sum(a.elements for a in instr.leaves)
    kind = "copy" if all(i.opcode in COPY_ONLY for i in fused.instructions) else "fusion"
    return kind, detail, float(elements), fusion_bytes(fused), ()


def classify(module: Module, comp: Computation, instr: Instruction) -> tuple:
    """(kind, detail, flops, bytes, operand_dtypes) of one kernel instruction."""
    op = instr.opcode
    io_bytes = sum(_operand_bytes(comp, instr)) + _result_bytes(instr)
    elements = float(sum(a.elements for a in instr.leaves))
    if op == "fusion":
        return _fusion_kernel(module, comp, instr)
    if op == "custom-call":
        target = instr.attr("custom_call_target") or ""
        if target.startswith(GEMM_TARGETS):
            flops, dtypes = _gemm_call_flops(comp, instr)
            return "gemm", target, flops, io_bytes, dtypes
        if target.startswith(ATTENTION_PREFIX):
            dtypes = tuple(comp.by_name[o].leaves[0].dtype for o in instr.operands[:2])
            return "attention", target, attention_flops(comp, instr), io_bytes, dtypes
        return "other", target, elements, io_bytes, ()
    if _base(op) in COLLECTIVES:
        return "collective", _base(op), 0.0, _collective_bytes(comp, instr), ()
    if op == "dot":
        flops, dtypes = _dot_flops(comp, instr)
        return "gemm", op, flops, io_bytes, dtypes
    if op in ("copy", "transpose", "copy-start"):
        return "copy", op, 0.0, io_bytes, ()
    if op == "dynamic-slice":
        return "other", op, elements, 2 * instr.bytes, ()
    if op == "dynamic-update-slice":
        return "other", op, elements, 2 * comp.by_name[instr.operands[1]].bytes, ()
    return "other", op, elements, io_bytes, ()


def _walk(module: Module, comp: Computation, count: int, loops: tuple[str, ...], note: str,
          out: list[Kernel]) -> None:
    for instr in comp.instructions:
        op = instr.opcode
        if op == "while":
            trip = trip_count(instr)
            inner = loops + (instr.op_name,)
            if trip is None:
                flag = note or f"{instr.name}: trip count unknown, counted once"
                _walk(module, module.computations[instr.attr("condition")], count, inner, flag, out)
                _walk(module, module.computations[instr.attr("body")], count, inner, flag, out)
            else:
                body = module.computations[instr.attr("body")]
                _walk(module, body, count * trip, inner, note, out)
        elif op in ("call", "conditional", "async-start"):
            for name in instr.called:
                _walk(module, module.computations[name], count, loops, note, out)
        elif op in NOT_KERNELS or op.endswith("-done"):
            continue
        else:
            kind, detail, flops, nbytes, dtypes = classify(module, comp, instr)
            out.append(Kernel(instr.name, kind, detail, count, flops, nbytes, dtypes,
                              region_of(instr.op_name, loops), instr.op_name,
                              short_type(instr.type_text), note))


def kernels_of(module: Module) -> list[Kernel]:
    """The kernels of a parsed module, in schedule order (loops' kernels listed once each)."""
    out: list[Kernel] = []
    _walk(module, module.entry_computation, 1, (), "", out)
    return out


def parse_kernels(hlo_text: str) -> list[Kernel]:
    """The kernels one step launches, with launches per step, FLOPs and bytes per launch."""
    return kernels_of(parse_module(hlo_text))
