"""Training and validation batches from a prepared directory (train.bin / val.bin / meta.json).

Training (`TrainLoader`): a grain `MapDataset` whose element i is optimizer step i (acc_steps
micro-batches), read from a memory-mapped token file, with grain's thread prefetch
(`to_iter_dataset(ReadOptions(...))`) so the accelerator never waits.

mode="baselines" reproduces llm-baselines (LZ `src/data/utils.py`): the stream of N tokens is cut
into (N-1)//L non-overlapping aligned chunks, x = data[iL : iL+L], y = data[iL+1 : iL+L+1]. Each
epoch visits every chunk once in the order of a seeded permutation, `np.random.default_rng([seed,
0, epoch]).permutation(num_chunks)` (a different permutation each epoch), and consecutive
`batch_size` chunks form a global micro-batch. The last `num_chunks % batch_size` chunks of each
epoch's permutation are dropped, so every batch has the same shape (one compiled step); torch's
DataLoader in llm-baselines (drop_last=False) keeps them as a smaller last batch instead. The
permutation itself differs from torch.randperm, so the exact order is not torch's.

mode="random": row r of global micro-batch m starts at `default_rng([seed, 1, m]).integers(0,
N-L, B)[r]` (any offset, not aligned).

Global micro-batch m is fixed by (seed, data, batch_size, seq_len) alone. A process takes rows
[pi*B/pc, (pi+1)*B/pc) of it, so the concatenation over processes is the same for any
process_count. Optimizer step s uses micro-batches s*acc_steps ... s*acc_steps + acc_steps - 1.
The loader state is the index of the next global micro-batch, so a restore reproduces the exact
sequence, also with a different process_count or acc_steps.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Any, Iterator

import grain
import numpy as np

from minillm_jax.data import DataError
from minillm_jax.data import format as fmt
from minillm_jax.data.format import load_meta
from minillm_jax.data.integrity import ALLOW_FLAG, changed_since

__all__ = ["TrainLoader", "iter_val_batches", "load_meta", "num_val_batches"]

MODES = ("baselines", "random")
STATE_VERSION = 1
_DATASET_LEN = 1 << 50  # "infinite": steps a training run can never reach


def _seed_word(seed: int) -> int:
    return int(seed) % (1 << 64)  # SeedSequence entries must be non-negative


def _check_sharding(batch_size: int, process_index: int, process_count: int) -> int:
    if process_count < 1 or not 0 <= process_index < process_count:
        raise DataError(f"process_index {process_index} is not in [0, process_count="
                        f"{process_count})")
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    if batch_size % process_count:
        raise DataError(f"batch_size {batch_size} is not divisible by process_count "
                        f"{process_count}: every process must load the same number of rows")
    return batch_size // process_count


def _gather(tokens: np.ndarray, starts: np.ndarray, seq_len: int, x: np.ndarray, y: np.ndarray) -> None:
    """x[r] = tokens[s_r : s_r+L], y[r] = tokens[s_r+1 : s_r+L+1] for s_r in starts."""
    for r, s in enumerate(starts.tolist()):
        row = tokens[s:s + seq_len + 1]
        x[r] = row[:-1]
        y[r] = row[1:]


class _Sampler:
    """Start offsets of this process's rows of global micro-batch m."""

    def __init__(self, num_tokens: int, seq_len: int, batch_size: int, seed: int, mode: str,
                 lo: int, hi: int):
        self.seq_len, self.batch_size, self.mode = seq_len, batch_size, mode
        self.seed, self.lo, self.hi = _seed_word(seed), lo, hi
        self.num_tokens = num_tokens
        self.num_chunks = (num_tokens - 1) // seq_len
        self.batches_per_epoch = self.num_chunks // batch_size
        self._perms: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def permutation(self, epoch: int) -> np.ndarray:
        with self._lock:
            perm = self._perms.get(epoch)
            if perm is None:
                perm = np.random.default_rng([self.seed, 0, epoch]).permutation(self.num_chunks)
                if self.num_chunks < (1 << 31):
                    perm = perm.astype(np.int32)
                self._perms[epoch] = perm
                while len(self._perms) > 2:  # prefetch threads may straddle an epoch boundary
                    self._perms.popitem(last=False)
            return perm

    def starts(self, micro: int) -> np.ndarray:
        if self.mode == "baselines":
            epoch, j = divmod(micro, self.batches_per_epoch)
            chunks = self.permutation(epoch)[j * self.batch_size + self.lo:j * self.batch_size + self.hi]
            return chunks.astype(np.int64) * self.seq_len
        rng = np.random.default_rng([self.seed, 1, micro])
        return rng.integers(0, self.num_tokens - self.seq_len, size=self.batch_size)[self.lo:self.hi]


class _StepSource:
    """grain random-access source: element i = one optimizer step, starting at `first_micro`."""

    def __init__(self, tokens: np.ndarray, sampler: _Sampler, acc_steps: int, first_micro: int):
        self.tokens, self.sampler = tokens, sampler
        self.acc_steps, self.first_micro = acc_steps, first_micro
        self.rows = sampler.hi - sampler.lo

    def __len__(self) -> int:
        return _DATASET_LEN

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        shape = (self.acc_steps, self.rows, self.sampler.seq_len)
        x, y = np.empty(shape, np.int32), np.empty(shape, np.int32)
        m0 = self.first_micro + int(index) * self.acc_steps
        for a in range(self.acc_steps):
            _gather(self.tokens, self.sampler.starts(m0 + a), self.sampler.seq_len, x[a], y[a])
        return {"x": x, "y": y}

    def __repr__(self) -> str:
        return (f"_StepSource(mode={self.sampler.mode}, rows={self.rows}, "
                f"seq_len={self.sampler.seq_len}, acc_steps={self.acc_steps})")


class TrainLoader:
    """Iterator of optimizer steps: {"x", "y"}: int32 (acc_steps, batch_size // process_count, seq_len).

    batch_size is the global micro-batch size (rows over all processes). See the module docstring
    for the sampling. `get_state()` / `set_state()` checkpoint the position (JSON).
    """

    def __init__(self, data_dir: str, *, batch_size: int, seq_len: int, seed: int,
                 acc_steps: int = 1, mode: str = "baselines", process_index: int = 0,
                 process_count: int = 1, prefetch: int = 2, fingerprint: dict | None = None,
                 allow_data_change: bool = False):
        if mode not in MODES:
            raise DataError(f"unknown loader mode {mode!r}: expected one of {', '.join(MODES)}")
        if seq_len < 1 or acc_steps < 1 or prefetch < 0:
            raise DataError(f"need seq_len >= 1, acc_steps >= 1, prefetch >= 0; got {seq_len}, "
                            f"{acc_steps}, {prefetch}")
        local = _check_sharding(batch_size, process_index, process_count)
        self.data_dir, self.meta = data_dir, load_meta(data_dir)
        self.tokens = fmt.open_tokens(data_dir, "train")
        n = int(self.tokens.shape[0])
        if n < seq_len + 1:
            raise DataError(f"seq_len {seq_len} is longer than the training data in {data_dir} "
                            f"({n:,} tokens)")
        self.batch_size, self.seq_len, self.seed = batch_size, seq_len, int(seed)
        self.acc_steps, self.mode, self.prefetch = acc_steps, mode, prefetch
        self.process_index, self.process_count = process_index, process_count
        self.fingerprint, self.allow_data_change = fingerprint, allow_data_change
        lo = process_index * local
        self._sampler = _Sampler(n, seq_len, batch_size, seed, mode, lo, lo + local)
        if mode == "baselines" and self._sampler.batches_per_epoch < 1:
            raise DataError(f"the training data in {data_dir} has {self._sampler.num_chunks:,} "
                            f"chunks of {seq_len} tokens, fewer than one batch of {batch_size}: "
                            "lower batch_size or seq_len")
        self._iter: Any = None
        self._first_micro = 0
        self._build(0)

    def _build(self, first_micro: int) -> None:
        self.close()
        self._first_micro = first_micro
        source = _StepSource(self.tokens, self._sampler, self.acc_steps, first_micro)
        dataset = grain.MapDataset.source(source)
        threads = min(self.prefetch, 2)
        options = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=self.prefetch)
        self._iter = iter(dataset.to_iter_dataset(options))

    def __iter__(self) -> "TrainLoader":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self._iter)

    @property
    def next_micro_batch(self) -> int:
        """Index of the next global micro-batch this loader will return."""
        return self._first_micro + self._iter.get_state()["next_index"] * self.acc_steps

    @property
    def batches_per_epoch(self) -> int:
        """Global micro-batches per epoch: (N-1)//L // batch_size (llm-baselines' len(loader),
        less its smaller last batch). Optimizer steps per epoch = this / acc_steps. In random
        mode the same nominal figure."""
        return self._sampler.batches_per_epoch

    @property
    def epoch(self) -> float:
        """Epochs consumed so far (fractional)."""
        return self.next_micro_batch / self.batches_per_epoch if self.batches_per_epoch else 0.0

    def get_state(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "micro_batch": self.next_micro_batch,
                "mode": self.mode, "seed": self.seed, "batch_size": self.batch_size,
                "seq_len": self.seq_len, "train_tokens": int(self.tokens.shape[0]),
                "acc_steps": self.acc_steps,
                **({"data_fingerprint": self.fingerprint} if self.fingerprint else {})}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continues from a `get_state()` result. The global batch sequence depends on mode, seed,
        batch_size, seq_len and the data, so these must match (the data may differ with
        allow_data_change); process_count and acc_steps may differ."""
        if not isinstance(state, dict) or "micro_batch" not in state:
            raise DataError(f"not a data loader state: {state!r}")
        if state.get("version", STATE_VERSION) != STATE_VERSION:
            raise DataError(f"data loader state version {state.get('version')} is not supported "
                            f"(expected {STATE_VERSION})")
        mine = self.get_state()
        changed = (changed_since(state.get("data_fingerprint"), self.fingerprint)
                   if self.fingerprint else [])
        if changed and not self.allow_data_change:
            raise DataError(f"cannot resume the data loader: {' and '.join(changed)} in "
                            f"{self.data_dir} changed since the checkpoint was saved; point "
                            f"data_dir at the data the run was trained on, or set {ALLOW_FLAG}")
        keys = ("mode", "seed", "batch_size", "seq_len") + (
            () if self.allow_data_change else ("train_tokens",))
        for key in keys:
            if key in state and state[key] != mine[key]:
                raise DataError(f"cannot resume the data loader: the checkpoint was saved with "
                                f"{key}={state[key]!r} but this run has {key}={mine[key]!r}; the "
                                "batch sequence would differ")
        micro = int(state["micro_batch"])
        if micro < 0:
            raise DataError(f"invalid data loader state: micro_batch {micro} < 0")
        self._build(micro)

    def close(self) -> None:
        """Stops the prefetch threads (the loader can still be restarted with set_state)."""
        if self._iter is not None and hasattr(self._iter, "close"):
            self._iter.close()
        self._iter = None

    def __enter__(self) -> "TrainLoader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"TrainLoader({self.data_dir!r}, mode={self.mode}, batch_size={self.batch_size}, "
                f"seq_len={self.seq_len}, acc_steps={self.acc_steps}, seed={self.seed}, "
                f"process {self.process_index}/{self.process_count})")


def _val_layout(data_dir: str, batch_size: int, seq_len: int) -> tuple[np.ndarray, int]:
    if batch_size < 1 or seq_len < 1:
        raise DataError(f"need batch_size >= 1 and seq_len >= 1, got {batch_size}, {seq_len}")
    tokens = fmt.open_tokens(data_dir, "val")
    chunks = (int(tokens.shape[0]) - 1) // seq_len
    if chunks < 1:
        raise DataError(f"seq_len {seq_len} is longer than the validation data in {data_dir} "
                        f"({tokens.shape[0]:,} tokens)")
    return tokens, chunks


def num_val_batches(data_dir: str, *, batch_size: int, seq_len: int) -> int:
    """Batches of `batch_size` (global) rows covering all (Nval-1)//seq_len val chunks."""
    _, chunks = _val_layout(data_dir, batch_size, seq_len)
    return math.ceil(chunks / batch_size)


def iter_val_batches(data_dir: str, *, batch_size: int, seq_len: int,
                     max_batches: int | None = None, process_index: int = 0,
                     process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
    """Validation batches in fixed order: global batch k holds val chunks k*B ... k*B+B-1
    (x = val[iL : iL+L], y = val[iL+1 : iL+L+1]); this process yields its rows
    [pi*B/pc, (pi+1)*B/pc). Rows past the last chunk are zero with mask 0, so every batch has
    the same shape. batch_size is global; max_batches=None covers the whole val set."""
    local = _check_sharding(batch_size, process_index, process_count)
    tokens, chunks = _val_layout(data_dir, batch_size, seq_len)
    total = math.ceil(chunks / batch_size)
    if max_batches is not None:
        total = min(total, max(0, int(max_batches)))
    return _val_batches(tokens, chunks, total, batch_size, seq_len, local, process_index * local)


def _val_batches(tokens: np.ndarray, chunks: int, total: int, batch_size: int, seq_len: int,
                 local: int, offset: int) -> Iterator[dict[str, np.ndarray]]:
    for k in range(total):
        first = k * batch_size + offset
        valid = max(0, min(local, chunks - first))
        x = np.zeros((local, seq_len), np.int32)
        y = np.zeros((local, seq_len), np.int32)
        mask = np.zeros((local, seq_len), np.float32)
        if valid:
            flat = np.asarray(tokens[first * seq_len:(first + valid) * seq_len + 1])
            x[:valid] = flat[:-1].reshape(valid, seq_len)
            y[:valid] = flat[1:].reshape(valid, seq_len)
            mask[:valid] = 1.0
        yield {"x": x, "y": y, "mask": mask}

