"""Reads the text of an optimized HLO module into computations and instructions.

Only the syntax `compiled.as_text()` prints is handled: computations `%name (params) -> type {`
(the entry one prefixed `ENTRY`), one instruction a line `%x = TYPE opcode(operands), attrs`,
tuple types, layouts `{...}` and `/*index=5*/` comments. Kept apart from the kernel model so the
model reads values (shapes, operands, attributes) rather than text.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

# Bytes per element; sub-byte types round to a fraction, `token` and unknown types to zero.
DTYPE_BYTES = {
    "pred": 1, "s2": 0.25, "u2": 0.25, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "s16": 2, "u16": 2,
    "s32": 4, "u32": 4, "s64": 8, "u64": 8, "f16": 2, "bf16": 2, "f32": 4, "f64": 8,
    "c64": 8, "c128": 16, "f4e2m1fn": 0.5, "f8e8m0fnu": 1, "f8e4m3fn": 1, "f8e5m2": 1,
    "f8e4m3": 1, "f8e3m4": 1, "f8e4m3fnuz": 1, "f8e5m2fnuz": 1, "f8e4m3b11fnuz": 1,
}
_ARRAY = re.compile(r"\b([a-z][a-z0-9]*)\[([^\]]*)\]")
_HEADER = re.compile(r"^(ENTRY\s+)?%([^\s(]+)\s*\(.*\)\s*->\s*.*\{\s*$")
_INSTR = re.compile(r"^\s*(ROOT\s+)?%([^\s=]+)\s*=\s*(.*)$")
_COMMENT = re.compile(r"/\*.*?\*/")
_OP_NAME = re.compile(r'op_name="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Array:
    """One array leaf of a type: element type and dimensions."""

    dtype: str
    dims: tuple[int, ...]

    @property
    def elements(self) -> int:
        return math.prod(self.dims)

    @property
    def bytes(self) -> float:
        return self.elements * DTYPE_BYTES.get(self.dtype, 0)


def parse_type(text: str) -> list[Array]:
    """Array leaves of a type text, tuples flattened in order; layouts and comments ignored."""
    leaves = []
    for dtype, dims in _ARRAY.findall(_COMMENT.sub("", text)):
        sizes = tuple(int(d.replace("<=", "")) for d in dims.split(",") if d.strip())
        leaves.append(Array(dtype, sizes))
    return leaves


@dataclass(frozen=True)
class Instruction:
    """One HLO instruction: its result type (text and leaves), opcode, operand names, attributes."""

    name: str
    type_text: str
    opcode: str
    operands: tuple[str, ...]
    attrs: str
    is_root: bool = False
    args_text: str = ""

    @property
    def leaves(self) -> list[Array]:
        return parse_type(self.type_text)

    @property
    def bytes(self) -> float:
        return sum(a.bytes for a in self.leaves)

    @property
    def is_tuple(self) -> bool:
        return self.type_text.startswith("(")

    def attr(self, key: str) -> str | None:
        """The value of `key=value` (a `%name`, a bare word or a `{...}` group), else None."""
        m = re.search(r"(?:^|[\s,])" + re.escape(key) + r"=", self.attrs)
        if not m:
            return None
        start = m.end()
        if self.attrs[start:start + 1] in "{(":
            return _balanced(self.attrs, start)
        return re.match(r'"[^"]*"|[^,\s]+', self.attrs[start:]).group(0).lstrip("%").strip('"')

    def dims_attr(self, key: str) -> tuple[int, ...]:
        """An integer list attribute such as lhs_contracting_dims={1}; () when absent."""
        value = self.attr(key)
        return tuple(int(v) for v in value.strip("{}").split(",") if v.strip()) if value else ()

    @property
    def called(self) -> tuple[str, ...]:
        """Names of the computations this instruction calls (calls=, body=, to_apply=, branches)."""
        names = []
        for key in ("calls", "to_apply", "condition", "body"):
            value = self.attr(key)
            if value:
                names += [v.strip().lstrip("%") for v in value.strip("{}").split(",")]
        branches = self.attr("branch_computations")
        if branches:
            names += [v.strip().lstrip("%") for v in branches.strip("{}").split(",")]
        for key in ("true_computation", "false_computation"):
            if self.attr(key):
                names.append(self.attr(key))
        return tuple(names)

    @property
    def backend_config(self) -> dict:
        """The backend_config JSON, or {} when absent or not JSON."""
        value = self.attr("backend_config")
        if not value or not value.startswith("{"):
            return {}
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return {}

    @property
    def op_name(self) -> str:
        m = _OP_NAME.search(self.attrs)
        return m.group(1) if m else ""


@dataclass
class Computation:
    """A named computation: its instructions in printed (scheduled) order."""

    name: str
    is_entry: bool
    instructions: list[Instruction] = field(default_factory=list)
    by_name: dict[str, Instruction] = field(default_factory=dict)

    @property
    def root(self) -> Instruction:
        return next((i for i in self.instructions if i.is_root), self.instructions[-1])

    def parameters(self) -> list[Instruction]:
        """Parameter instructions ordered by their parameter number."""
        params = [i for i in self.instructions if i.opcode == "parameter"]
        return sorted(params, key=lambda p: int(p.args_text))

    def users(self, name: str) -> list[Instruction]:
        return [i for i in self.instructions if name in i.operands]


@dataclass
class Module:
    """All computations of a module, by name, and the entry computation's name."""

    computations: dict[str, Computation]
    entry: str

    @property
    def entry_computation(self) -> Computation:
        return self.computations[self.entry]


def _balanced(text: str, start: int) -> str:
    """The bracketed group opening at text[start] ('(' or '{'), brackets included."""
    pairs = {"(": ")", "{": "}", "[": "]"}
    stack = []
    in_string = False
    for i in range(start, len(text)):
        c = text[i]
        if in_string:
            if c == "\\":
                continue
            if c == '"' and text[i - 1] != "\\":
                in_string = False
            continue
        if c == '"':
            in_string = True
        elif c in pairs:
            stack.append(pairs[c])
        elif stack and c == stack[-1]:
            stack.pop()
            if not stack:
                return text[start:i + 1]
    return text[start:]


def parse_instruction(line: str) -> Instruction | None:
    """One instruction line, or None when the line is not an instruction."""
    m = _INSTR.match(line)
    if not m:
        return None
    is_root, name, rest = bool(m.group(1)), m.group(2), m.group(3)
    if rest.startswith("("):
        type_text = _balanced(rest, 0)
        rest = rest[len(type_text):].lstrip()
    else:
        type_text, _, rest = rest.partition(" ")
    op = re.match(r"([a-z][\w\-]*)\(", rest)
    if not op:
        return None
    args = _balanced(rest, op.end() - 1)
    attrs = rest[op.end() - 1 + len(args):].lstrip(", ")
    inner = _COMMENT.sub("", args[1:-1])
    operands = tuple(re.findall(r"%([^\s,()]+)", inner))
    return Instruction(name, type_text, op.group(1), operands, attrs, is_root, inner.strip())


def parse_module(text: str) -> Module:
    """All computations of an HLO module text; raises ValueError when there is no ENTRY."""
    computations: dict[str, Computation] = {}
    entry = None
    current: Computation | None = None
    for line in text.splitlines():
        if current is None:
            header = _HEADER.match(line)
            if header:
                current = Computation(header.group(2), bool(header.group(1)))
                entry = current.name if current.is_entry else entry
            continue
        if line.strip() == "}":
            computations[current.name] = current
            current = None
            continue
        instr = parse_instruction(line)
        if instr is not None:
            current.instructions.append(instr)
            current.by_name[instr.name] = instr
    if entry is None:
        raise ValueError("no ENTRY computation in the HLO text")
    return Module(computations, entry)
