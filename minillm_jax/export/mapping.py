"""Table-driven mapping between our parameter tree and a PyTorch state dict.

A *spec* is a list of `Rule`s, one per parameter leaf of our tree (plus "synthetic" rules for
tensors the target needs but our model does not have, e.g. GPT-2's zero biases). Each rule names
our leaf ("blocks/attn/c_attn/kernel"), the torch key(s) it becomes (with "{i}" for the layer of a
stacked block leaf) and a `Transform` that converts the array both ways and predicts the torch
shapes. `to_state_dict` and `from_state_dict` are generic: an architecture is added by writing one
function that returns its rules (see `architectures.py`), nothing else.

Every transform is a pure re-indexing (transpose, split, row permutation, copy), so a round trip
is bit-exact, and it is linear, so the same rules map gradients.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from minillm_jax.export.errors import ConversionError, format_key_problems

Shape = tuple[int, ...]


class Transform:
    """One of our arrays <-> one or more torch arrays (for one layer)."""

    n_out: int = 1

    def to_torch(self, x: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def from_torch(self, xs: Sequence[np.ndarray], names: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    def torch_shapes(self, shape: Shape) -> list[Shape]:
        raise NotImplementedError


class Identity(Transform):
    def to_torch(self, x):
        return [x]

    def from_torch(self, xs, names):
        return xs[0]

    def torch_shapes(self, shape):
        return [tuple(shape)]


class Transpose(Transform):
    """Flax Dense kernel (in, out) <-> torch Linear weight (out, in)."""

    def to_torch(self, x):
        return [x.T]

    def from_torch(self, xs, names):
        return xs[0].T

    def torch_shapes(self, shape):
        return [tuple(shape[::-1])]


class Tied(Transform):
    """One array written under several keys (tied embeddings); on import they must be equal."""

    def __init__(self, n_out: int, hint: str = ""):
        self.n_out = n_out
        self.hint = hint

    def to_torch(self, x):
        return [x] * self.n_out

    def from_torch(self, xs, names):
        for name, other in zip(names[1:], xs[1:]):
            if not np.array_equal(xs[0], other):
                diff = float(np.max(np.abs(xs[0].astype(np.float64) - other)))
                raise ConversionError(
                    f"{names[0]} and {name} differ (max |diff| {diff:.3g}) but the target model "
                    f"ties them. {self.hint}".strip())
        return xs[0]

    def torch_shapes(self, shape):
        return [tuple(shape)] * self.n_out


def rope_interleaved_to_half(head_dim: int) -> np.ndarray:
    """Row order turning interleaved RoPE pairs (2j, 2j+1) into rotate-half pairs (j, j+hs/2)."""
    return np.concatenate([np.arange(0, head_dim, 2), np.arange(1, head_dim, 2)])


class RowPermutation(Transform):
    """A 1-D array reordered by `perm` (e.g. per-head q/k norm scales from interleaved RoPE pairs
    to rotate-half pairs, like the q/k rows they multiply)."""

    def __init__(self, perm: np.ndarray):
        self.perm = np.asarray(perm)

    def to_torch(self, x):
        return [x[..., self.perm]]

    def from_torch(self, xs, names):
        return xs[0][..., np.argsort(self.perm)]

    def torch_shapes(self, shape):
        return [tuple(shape)]


class QKVSplit(Transform):
    """c_attn kernel (C, 3C) [columns q|k|v, heads contiguous] or bias (3C,) -> separate q, k, v.

    transpose: torch Linear layout (out, in) for kernels.
    permute_qk: reorder each head's q and k rows from interleaved RoPE pairs to rotate-half pairs
    (the q.k dot product is invariant under the same permutation of q and k, so attention is
    unchanged; HF's rotate-half RoPE on the permuted rows equals our interleaved RoPE).
    """

    n_out = 3

    def __init__(self, n_head: int, transpose: bool, permute_qk: bool):
        self.n_head, self.transpose, self.permute_qk = n_head, transpose, permute_qk

    def _perm(self, c: int) -> np.ndarray:
        hs = c // self.n_head
        per_head = rope_interleaved_to_half(hs)
        return (np.arange(self.n_head)[:, None] * hs + per_head[None, :]).reshape(-1)

    def to_torch(self, x):
        q, k, v = np.split(x, 3, axis=-1)
        parts = []
        for j, part in enumerate((q, k, v)):
            if self.permute_qk and j < 2:
                part = part[..., self._perm(part.shape[-1])]
            parts.append(part.T if (self.transpose and part.ndim == 2) else part)
        return parts

    def from_torch(self, xs, names):
        parts = []
        for j, part in enumerate(xs):
            part = part.T if (self.transpose and part.ndim == 2) else part
            if self.permute_qk and j < 2:
                part = part[..., np.argsort(self._perm(part.shape[-1]))]
            parts.append(part)
        return np.concatenate(parts, axis=-1)

    def torch_shapes(self, shape):
        part = tuple(shape[:-1]) + (shape[-1] // 3,)
        return [part[::-1] if (self.transpose and len(part) == 2) else part] * 3


@dataclasses.dataclass(frozen=True)
class Rule:
    """ours: our leaf path ("a/b/c"), None for a synthetic target tensor (zeros of `shape`).
    torch: target key(s); "{i}" is the layer index of a leaf stacked on axis 0 (layered=True)."""

    ours: str | None
    torch: tuple[str, ...]
    transform: Transform = dataclasses.field(default_factory=Identity)
    layered: bool = False
    shape: Shape | None = None  # synthetic rules only (per layer)
    why: str = ""  # synthetic rules: why the tensor is there

    def names(self, i: int | None = None) -> list[str]:
        return [t.format(i=i) for t in self.torch] if self.layered else list(self.torch)


def layered(template_prefix: str, entries: Iterable[tuple]) -> list[Rule]:
    """Rules for stacked block leaves: entries of (our path under blocks/, torch suffix(es),
    transform). The torch key is template_prefix + suffix, e.g. "transformer.h.{i}." + "ln_1.weight"."""
    rules = []
    for ours, suffixes, transform in entries:
        suffixes = (suffixes,) if isinstance(suffixes, str) else tuple(suffixes)
        rules.append(Rule(f"blocks/{ours}", tuple(template_prefix + s for s in suffixes),
                          transform, layered=True))
    return rules


# --------------------------------------------------------------------------- tree helpers


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, path + "/"))
        else:
            out[path] = value
    return out


def unflatten(flat: Mapping[str, Any]) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def to_numpy(x: Any) -> np.ndarray:
    """A float32 numpy copy of a jax/numpy array or torch tensor (any float dtype)."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu()
        if not x.is_floating_point():
            raise ConversionError(f"expected a floating-point tensor, got dtype {x.dtype}")
        return x.float().numpy()
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating) and x.dtype.name != "bfloat16":
        raise ConversionError(f"expected a floating-point array, got dtype {x.dtype}")
    return x.astype(np.float32)


# --------------------------------------------------------------------------- generic conversion


def check_tree(flat: Mapping[str, Any], expected: Mapping[str, Shape], what: str) -> None:
    """Our tree has exactly the expected leaves and shapes, else one ConversionError."""
    missing = sorted(set(expected) - set(flat))
    unexpected = sorted(set(flat) - set(expected))
    mismatched = [(k, np.shape(flat[k]), expected[k]) for k in sorted(set(flat) & set(expected))
                  if tuple(np.shape(flat[k])) != tuple(expected[k])]
    if missing or unexpected or mismatched:
        raise ConversionError(format_key_problems(
            f"parameter tree does not match {what}:", missing=missing, unexpected=unexpected,
            mismatched=mismatched))


def check_rules_cover(rules: Sequence[Rule], expected: Mapping[str, Shape], what: str) -> None:
    """Every leaf of our model has exactly one rule (guards new architectures' tables)."""
    covered = [r.ours for r in rules if r.ours is not None]
    dupes = sorted({p for p in covered if covered.count(p) > 1})
    unmapped = sorted(set(expected) - set(covered))
    unknown = sorted(set(covered) - set(expected))
    if dupes or unmapped or unknown:
        raise ConversionError(format_key_problems(
            f"the conversion table of {what} does not cover the model's parameters "
            "(a bug in the table, or a model option the converter does not support):",
            other=[f"no rule for {p}" for p in unmapped] + [f"rule for absent {p}" for p in unknown]
            + [f"several rules for {p}" for p in dupes]))


def to_state_dict(flat: Mapping[str, np.ndarray], rules: Sequence[Rule], n_layer: int,
                  ) -> dict[str, np.ndarray]:
    """Our flat tree -> {torch key: array}, in torch module order: rules in table order, each
    run of consecutive layered rules layer by layer (h.0.*, h.1.*, ...), lm_head.weight last."""
    out: dict[str, np.ndarray] = {}
    for rule, i in _module_order(rules, n_layer):
        if rule.ours is None:
            arrays = [np.zeros(rule.shape, np.float32)]
        else:
            x = flat[rule.ours]
            arrays = rule.transform.to_torch(x[i] if rule.layered else x)
        copies: dict[int, np.ndarray] = {}  # one contiguous copy per array (tied keys share it)
        for name, array in zip(rule.names(i), arrays):
            if id(array) not in copies:
                copies[id(array)] = np.array(array, dtype=np.float32, order="C")
            out[name] = copies[id(array)]
    if "lm_head.weight" in out:  # torch modules register lm_head after the transformer
        out["lm_head.weight"] = out.pop("lm_head.weight")
    return out


def _module_order(rules: Sequence[Rule], n_layer: int) -> list[tuple[Rule, int | None]]:
    order: list[tuple[Rule, int | None]] = []
    run: list[Rule] = []
    for rule in list(rules) + [None]:
        if rule is not None and rule.layered:
            run.append(rule)
            continue
        order += [(r, i) for i in range(n_layer) for r in run]
        run = []
        if rule is not None:
            order.append((rule, None))
    return order


def expected_torch_shapes(rules: Sequence[Rule], shapes: Mapping[str, Shape], n_layer: int,
                          ) -> dict[str, Shape]:
    out: dict[str, Shape] = {}
    for rule, i in _module_order(rules, n_layer):
        if rule.ours is None:
            torch_shapes = [tuple(rule.shape)]
        else:
            shape = tuple(shapes[rule.ours])
            torch_shapes = rule.transform.torch_shapes(shape[1:] if rule.layered else shape)
        out.update(zip(rule.names(i), torch_shapes))
    if "lm_head.weight" in out:
        out["lm_head.weight"] = out.pop("lm_head.weight")
    return out


def from_state_dict(state_dict: Mapping[str, Any], rules: Sequence[Rule],
                    shapes: Mapping[str, Shape], n_layer: int, what: str) -> dict[str, np.ndarray]:
    """{torch key: tensor} -> our flat tree, after checking keys and shapes (one error for all)."""
    expected = expected_torch_shapes(rules, shapes, n_layer)
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [(k, tuple(state_dict[k].shape), expected[k]) for k in expected
                  if k in state_dict and tuple(state_dict[k].shape) != expected[k]]
    if missing or unexpected or mismatched:
        raise ConversionError(format_key_problems(
            f"state dict does not match {what}:", missing=missing, unexpected=unexpected,
            mismatched=mismatched))
    arrays, bad_dtypes = {}, []
    for key in expected:
        try:
            arrays[key] = to_numpy(state_dict[key])  # float16/bfloat16 are upcast exactly
        except ConversionError as err:
            bad_dtypes.append(f"{key}: {err}")
    if bad_dtypes:
        raise ConversionError(format_key_problems(f"state dict does not match {what}:",
                                                  other=bad_dtypes))
    flat: dict[str, np.ndarray] = {}
    nonzero = []
    for rule in rules:
        per_layer = []
        for i in (range(n_layer) if rule.layered else [None]):
            names = rule.names(i)
            if rule.ours is None:
                if np.any(arrays[names[0]] != 0):
                    nonzero.append(f"{names[0]} is not zero, but {rule.why}")
                continue
            per_layer.append(rule.transform.from_torch([arrays[n] for n in names], names))
        if rule.ours is not None:
            flat[rule.ours] = np.stack(per_layer) if rule.layered else per_layer[0]
    if nonzero:
        raise ConversionError(format_key_problems(
            f"state dict cannot be represented exactly by {what}:", other=nonzero))
    # reshaped back: np.ascontiguousarray turns a 0-d array (a scalar parameter) into shape (1,)
    return {k: np.ascontiguousarray(v, dtype=np.float32).reshape(np.shape(v))
            for k, v in flat.items()}
