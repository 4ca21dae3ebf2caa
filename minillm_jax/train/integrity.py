"""Checkpoint integrity: checksums of every item of a checkpoint, checked on restore (orbax
detects truncated or missing files, not flipped bytes inside a chunk or a changed digit in a
JSON item). The checkpoint errors live here, at the bottom of the checkpoint modules
(minillm_jax.train.checkpointing re-exports them).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import jax
import jax.numpy as jnp



class CheckpointError(RuntimeError):
    """A checkpoint cannot be used or written; the message names it and what to do."""


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped (e.g. unreadable) and an older one is used instead."""

# Fingerprints: order-aware wrapping uint32 sums of each array's bits, computed where the arrays
# live (integer sums are exact, so the value is the same for any sharding or device count).


def _leaf_fingerprint(x: jax.Array) -> jax.Array:
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.uint8)
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
    bits = jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)
    index, stride = jnp.zeros(bits.shape, jnp.uint32), 1
    for axis in reversed(range(bits.ndim)):
        index = index + jax.lax.broadcasted_iota(jnp.uint32, bits.shape, axis) * jnp.uint32(stride)
        stride = (stride * bits.shape[axis]) & 0xFFFFFFFF
    mixed = (bits ^ jnp.uint32(0x9E3779B9)) * (index * jnp.uint32(2) + jnp.uint32(1))
    return jnp.sum(mixed, dtype=jnp.uint32)


_fingerprint_leaves = jax.jit(lambda leaves: [_leaf_fingerprint(x) for x in leaves])


def fingerprints(trees: dict[str, Any]) -> dict[str, dict[str, int]]:
    """{name: {keypath: checksum}} of every array of each tree (one compiled call, on device)."""
    flat = {name: jax.tree_util.tree_flatten_with_path(tree)[0] for name, tree in trees.items()}
    leaves = [leaf for items in flat.values() for _, leaf in items]
    values = iter(jax.device_get(_fingerprint_leaves(leaves)) if leaves else [])
    return {name: {jax.tree_util.keystr(path): int(next(values)) for path, _ in items}
            for name, items in flat.items()}


def fingerprint(tree: Any) -> dict[str, int]:
    """{keypath: checksum} of every array in `tree` (computed on device, sharding-independent)."""
    return fingerprints({"tree": tree})["tree"]


def state_fingerprints(state: Any) -> dict[str, dict[str, int]]:
    trees = {"params": state.params, "train": {"step": state.step, "rng": state.rng}}
    if state.opt_state is not None:
        trees["opt_state"] = state.opt_state
    return fingerprints(trees)


def json_digest(value: Any) -> str:
    """SHA-256 of a JSON item's canonical text (what orbax writes reads back as equal JSON)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_fingerprints(expected: dict | None, actual: dict[str, dict[str, int]]) -> None:
    """Raises CheckpointError if an array's checksum differs (expected None: not checked)."""
    if not expected:
        return
    for item, sums in actual.items():
        saved = expected.get(item)
        if saved is None:
            continue
        bad = [k for k in sums if saved.get(k) != sums[k]]
        if bad or set(saved) != set(sums):
            names = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            raise CheckpointError(f"{item} do not match their checksums ({names or 'array list'}):"
                                  " the files are corrupted")


def check_items(expected: dict, present: set[str], json_items: dict[str, Any]) -> None:
    """The items saved are all there and each JSON item matches its saved digest."""
    saved = expected.get("items")
    if saved is not None:
        missing = sorted(set(saved) - present)
        if missing:
            raise CheckpointError(f"items {missing} are missing: the checkpoint is incomplete")
    for name, digest in (expected.get("json") or {}).items():
        if name not in json_items or json_digest(json_items[name]) != digest:
            raise CheckpointError(f"{name} does not match its checksum: the file is corrupted")
