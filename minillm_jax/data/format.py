"""The on-disk format of a prepared dataset and its checks (no jax/grain imports here)."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np


class DataError(ValueError):
    """A data problem the user can fix (missing files, bad input, bad options); one clear line.

    Defined here, the bottom of the data package, and re-exported by `minillm_jax.data`."""


TRAIN_FILE = "train.bin"
VAL_FILE = "val.bin"
META_FILE = "meta.json"
SPLITS = ("train", "val")
TOKEN_DTYPE = np.uint16
FORMAT = "minillm-jax tokens v1"


def prepare_command(data_dir: str, dataset: str | None = None) -> str:
    """The command that creates `data_dir`, for error messages."""
    name = dataset or "NAME"
    source = "" if dataset in ("shakespeare", "shakespeare-dev") else " [--source ...]"
    return f"python -m minillm_jax.data.prepare --dataset {name} --out {data_dir}{source}"


def no_data_error(data_dir: str, dataset: str | None = None, why: str = "") -> DataError:
    why = f" ({why})" if why else ""
    return DataError(f"no prepared data in {data_dir}{why}: run `{prepare_command(data_dir, dataset)}`")


def _read_meta(data_dir: str) -> dict[str, Any] | None:
    path = os.path.join(data_dir, META_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read {path}: {err}; delete it and prepare again") from None
    return meta if isinstance(meta, dict) else None


def _complete(data_dir: str, meta: dict[str, Any]) -> str:
    """'' when both token files exist with the sizes meta.json promises, else the reason."""
    for split in SPLITS:
        tokens = meta.get(split, {}).get("tokens") if isinstance(meta.get(split), dict) else None
        if not isinstance(tokens, int):
            return f"{META_FILE} has no {split} token count"
        path = os.path.join(data_dir, f"{split}.bin")
        try:
            size = os.path.getsize(path)
        except OSError:
            return f"{split}.bin is missing"
        if size != tokens * np.dtype(TOKEN_DTYPE).itemsize:
            return (f"{split}.bin has {size} bytes but {META_FILE} says {tokens} uint16 tokens; "
                    "the directory is incomplete or was modified")
    return ""


def is_prepared(data_dir: str) -> bool:
    """True when `data_dir` holds a finished dataset (meta.json plus token files of matching size)."""
    try:
        meta = _read_meta(data_dir)
    except DataError:
        return False
    return meta is not None and not _complete(data_dir, meta)


def load_meta(data_dir: str) -> dict[str, Any]:
    """The contents of `data_dir/meta.json`; DataError if the directory is not a finished dataset."""
    if not os.path.isdir(data_dir):
        raise no_data_error(data_dir, why="directory does not exist")
    meta = _read_meta(data_dir)
    if meta is None:
        raise no_data_error(data_dir, why=f"no {META_FILE}")
    problem = _complete(data_dir, meta)
    if problem:
        raise no_data_error(data_dir, meta.get("dataset"), problem)
    return meta


def open_tokens(data_dir: str, split: str) -> np.ndarray:
    """Read-only memory map of `split`.bin after checking it against meta.json."""
    load_meta(data_dir)
    path = os.path.join(data_dir, f"{split}.bin")
    if os.path.getsize(path) == 0:
        return np.zeros((0,), TOKEN_DTYPE)
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r")
