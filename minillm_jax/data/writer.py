"""The output side of `prepare`: documents grouped, tokenized in order (inline or by a process
pool), and written to hidden temporary token files, with per-split and per-source counts and a
progress line. `prepare` renames the files once everything is written.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import datetime
import math
import os
import sys
import time
from collections import deque
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable

import numpy as np

from minillm_jax.data import DataError
from minillm_jax.data import format as fmt
from minillm_jax.data.plans import Plan

# What encoding one group gives: tokens (uint16, EOT after each document), per-document token and
# UTF-8 byte counts, and how many documents had lone surrogates replaced.
Encoded = tuple[np.ndarray, np.ndarray, np.ndarray, int]


def tmp_path(out_dir: str, name: str) -> str:
    return os.path.join(out_dir, f".{name}.tmp-{os.getpid()}")


def fsync_write(path: str, write) -> None:
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


@dataclasses.dataclass
class SplitStats:
    tokens: int = 0
    bytes: int = 0
    documents: int = 0
    empty_documents: int = 0
    sources: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "bytes": self.bytes, "documents": self.documents,
                "empty_documents": self.empty_documents,
                "sources": {k: self.sources[k] for k in sorted(self.sources)}}


@dataclasses.dataclass
class Group:
    split: str
    texts: list[str] = dataclasses.field(default_factory=list)
    names: list[str] = dataclasses.field(default_factory=list)
    ranks: list[int] = dataclasses.field(default_factory=list)
    chars: int = 0


class Progress:
    """One status line on stderr: documents, MB, MB/s, ETA (redrawn on a TTY, else every 30 s)."""

    def __init__(self, label: str, total: int, enabled: bool):
        self.label, self.total, self.enabled = label, total, enabled
        self.tty = enabled and sys.stderr.isatty()
        self.interval = 0.5 if self.tty else 30.0
        self.start = self.last = time.perf_counter()
        self.docs = self.bytes = 0

    def update(self, docs: int, nbytes: int) -> None:
        self.docs, self.bytes = docs, nbytes
        now = time.perf_counter()
        if self.enabled and now - self.last >= self.interval:
            self.last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        dt = max(now - self.start, 1e-9)
        pct = 100.0 * self.docs / max(self.total, 1)
        rate = self.docs / dt
        eta = (self.total - self.docs) / rate if rate > 0 else float("nan")
        eta_s = str(datetime.timedelta(seconds=int(eta))) if math.isfinite(eta) else "?"
        line = (f"{self.label}: {self.docs:,}/{self.total:,} docs ({pct:.1f}%) | "
                f"{self.bytes / 1e6:,.1f} MB | {self.bytes / 1e6 / dt:.1f} MB/s | ETA {eta_s}")
        sys.stderr.write(("\r" + line + "\x1b[K") if self.tty else (line + "\n"))
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.perf_counter())
            if self.tty:
                sys.stderr.write("\n")
                sys.stderr.flush()


class Writer:
    """Consumes the document stream: groups documents, tokenizes groups (in order), writes."""

    def __init__(self, plan: Plan, out_dir: str, executor: Any, max_inflight: int,
                 group_chars: int, progress: Progress, encode: Callable[[list[str]], Encoded]):
        self.plan, self.out_dir, self.executor, self.encode = plan, out_dir, executor, encode
        self.max_inflight, self.group_chars, self.progress = max_inflight, group_chars, progress
        self.stats = {"train": SplitStats(), "val": SplitStats()}
        self.pending = {"train": Group("train"), "val": Group("val")}
        self.inflight: deque[tuple[Group, cf.Future]] = deque()
        self.val_pieces: list[tuple[int, np.ndarray]] = []
        self.fixed = self.records = self.done_bytes = 0
        self.train_file = open(tmp_path(out_dir, fmt.TRAIN_FILE), "wb")

    def run(self) -> None:
        for split, rank, text, name in self.plan.items:
            self.records += 1
            if text is None:  # malformed record skipped with --skip-bad (counted by the reader)
                continue
            if not text or text.isspace():
                self.stats[split].empty_documents += 1
                continue
            group = self.pending[split]
            group.texts.append(text)
            group.names.append(name)
            if rank is not None:
                group.ranks.append(rank)
            group.chars += len(text)
            if group.chars >= self.group_chars:
                self._submit(split)
        for split in ("train", "val"):
            self._submit(split)
        while self.inflight:
            self._drain_one()
        self.progress.update(self.records, self.done_bytes)

    def _submit(self, split: str) -> None:
        group = self.pending[split]
        if not group.texts:
            return
        self.pending[split] = Group(split)
        while len(self.inflight) >= self.max_inflight:
            self._drain_one()
        self.inflight.append((group, self.executor.submit(self.encode, group.texts)))
        group.texts = []  # the task holds its own copy (pickled) or is done (inline)

    def _drain_one(self) -> None:
        group, future = self.inflight.popleft()
        try:
            tokens, lengths, nbytes, fixed = future.result()
        except BrokenProcessPool as err:
            raise DataError(f"a tokenizer worker process died ({err}); retry with a smaller "
                            "--num-proc") from None
        self.fixed += fixed
        stats = self.stats[group.split]
        stats.tokens += int(tokens.size)
        stats.bytes += int(nbytes.sum())
        stats.documents += len(lengths)
        self.done_bytes += int(nbytes.sum())
        for name, n_tok, n_bytes in zip(group.names, lengths.tolist(), nbytes.tolist()):
            src = stats.sources.setdefault(name, {"documents": 0, "tokens": 0, "bytes": 0})
            src["documents"] += 1
            src["tokens"] += n_tok
            src["bytes"] += n_bytes
        if group.split == "train":
            tokens.tofile(self.train_file)
        else:
            bounds = np.cumsum(lengths)[:-1]
            self.val_pieces += zip(group.ranks, np.split(tokens, bounds))
        self.progress.update(self.records, self.done_bytes)

    def finish_files(self) -> None:
        self.train_file.flush()
        os.fsync(self.train_file.fileno())
        self.train_file.close()
        self.val_pieces.sort(key=lambda piece: piece[0])
        fsync_write(tmp_path(self.out_dir, fmt.VAL_FILE),
                     lambda f: [piece.tofile(f) for _, piece in self.val_pieces])

    def close(self) -> None:
        if not self.train_file.closed:
            self.train_file.close()
