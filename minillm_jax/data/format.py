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


def prepare_command(data_dir: str, dataset: str | None = None, force: bool = False) -> str:
    """The command that creates `data_dir` (`force`: over what is there), for error messages."""
    name = dataset or "NAME"
    source = "" if dataset in ("shakespeare", "shakespeare-dev") else " [--source ...]"
    redo = " --force" if force else ""
    return f"python -m minillm_jax.data.prepare --dataset {name} --out {data_dir}{redo}{source}"


def no_data_error(data_dir: str, dataset: str | None = None, why: str = "",
                  verb: str = "run") -> DataError:
    why = f" ({why})" if why else ""
    return DataError(f"no prepared data in {data_dir}{why}: {verb} "
                     f"`{prepare_command(data_dir, dataset)}`")


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


def _file_problem(data_dir: str, split: str, tokens: Any) -> str:
    """'' when `split`.bin exists with the size meta.json promises, else what is wrong with it."""
    name = f"{split}.bin"
    if not isinstance(tokens, int):
        return f"{META_FILE} has no {split} token count"
    try:
        size = os.path.getsize(os.path.join(data_dir, name))
    except OSError:
        return f"{name} is missing"
    itemsize = np.dtype(TOKEN_DTYPE).itemsize
    if size % itemsize:
        return (f"{name} has {size:,} bytes, an odd count, so not whole uint16 tokens (truncated "
                "or damaged)")
    if size == 0:
        return f"{name} is empty (0 bytes; {META_FILE} says {tokens:,} tokens)"
    if size != tokens * itemsize:
        return (f"{name} has {size // itemsize:,} tokens but {META_FILE} says {tokens:,} "
                "(truncated, appended to or replaced)")
    return ""


def _problems(data_dir: str, meta: dict[str, Any]) -> list[str]:
    """What is wrong with the token files of a directory holding `meta`, every file at once."""
    found = []
    for split in SPLITS:
        entry = meta.get(split)
        problem = _file_problem(data_dir, split,
                                entry.get("tokens") if isinstance(entry, dict) else None)
        if problem:
            found.append(problem)
    return found


def _leftovers(data_dir: str) -> bool:
    """Whether `data_dir` holds files of a prepare that never finished (no meta.json)."""
    names = (TRAIN_FILE, VAL_FILE, META_FILE)
    try:
        entries = os.listdir(data_dir)
    except OSError:
        return False
    return any(e in names or any(e.startswith(f".{n}.tmp-") for n in names) for e in entries)


def is_prepared(data_dir: str) -> bool:
    """True when `data_dir` holds a finished dataset (meta.json plus token files of matching size)."""
    try:
        meta = _read_meta(data_dir)
    except DataError:
        return False
    return meta is not None and not _problems(data_dir, meta)


def load_meta(data_dir: str, dataset: str | None = None) -> dict[str, Any]:
    """The contents of `data_dir/meta.json`; DataError if the directory is not a finished dataset
    (meta.json is written last, so a killed prepare leaves none: see prepare.py). `dataset`
    names the dataset in the command the message suggests."""
    if not os.path.isdir(data_dir):
        raise no_data_error(data_dir, dataset, why="directory does not exist")
    meta = _read_meta(data_dir)
    if meta is None:
        if _leftovers(data_dir):
            raise no_data_error(data_dir, dataset, f"an interrupted prepare left unfinished "
                                f"files and no {META_FILE}, which prepare writes last", "rerun")
        raise no_data_error(data_dir, dataset, why=f"no {META_FILE}")
    problems = _problems(data_dir, meta)
    if problems:
        raise DataError(f"damaged data in {data_dir}: {'; '.join(problems)}; prepare it again "
                        f"with `{prepare_command(data_dir, meta.get('dataset'), force=True)}`")
    return meta


def open_tokens(data_dir: str, split: str) -> np.ndarray:
    """Read-only memory map of `split`.bin after checking it against meta.json."""
    load_meta(data_dir)  # refuses empty files, which np.memmap cannot map
    return np.memmap(os.path.join(data_dir, f"{split}.bin"), dtype=TOKEN_DTYPE, mode="r")
