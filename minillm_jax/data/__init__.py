"""Data: prepare token files once (`python -m minillm_jax.data.prepare`), then load them with grain.

Layout of a prepared directory: `train.bin` and `val.bin` (flat np.uint16 token streams, each
document's tokens followed by EOT 50256) and `meta.json` (counts, tokenizer, source, split, and
each file's digests and largest token, checked by `check_data` before every run).

Importing this package is cheap: the grain loader (which imports jax) and the tokenizer are loaded
on first use of `TrainLoader`, `iter_val_batches`, `num_val_batches`, `ensure_dataset` or
`prepare_dataset`, so tokenizer worker processes never import jax.
"""

from __future__ import annotations

import importlib
from typing import Any

from minillm_jax.data.format import DataError, is_prepared, load_meta
from minillm_jax.data.integrity import check_data

_LAZY = {
    "TrainLoader": "minillm_jax.data.loader",
    "iter_val_batches": "minillm_jax.data.loader",
    "num_val_batches": "minillm_jax.data.loader",
    "ensure_dataset": "minillm_jax.data.prepare",
    "prepare_dataset": "minillm_jax.data.prepare",
}

__all__ = ["DataError", "TrainLoader", "check_data", "ensure_dataset", "is_prepared", "iter_val_batches",
           "load_meta", "num_val_batches", "prepare_dataset"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
