"""Tokenize a corpus once into `train.bin`, `val.bin` and `meta.json`.

    python -m minillm_jax.data.prepare --dataset slimpajama --out DATA_DIR [--source SRC] [--num-proc N]
    python -m minillm_jax.data.prepare --dataset shakespeare --out DATA_DIR
    python -m minillm_jax.data.prepare --dataset text --source 'DIR/*.jsonl' --out DATA_DIR

Sources
  * `slimpajama` without `--source`: DKYoon/SlimPajama-6B from the Hugging Face hub, exactly as
    llm-baselines (`src/data/slimpajama.py`): `load_dataset(...)["train"].train_test_split(
    test_size=0.0005, seed=2357, shuffle=True)`, "test" becomes val, both splits written in the
    order `datasets` yields them (train is therefore in permutation order, as in llm-baselines).
    Needs the `data` extra (`datasets`) and network access.
  * `--source` (a directory, searched recursively, a file, or a glob; quote globs) of .parquet / .jsonl /
    .jsonl.zst / .txt files, read offline in sorted path order. Records are numbered in that order
    and split with `datasets.train_test_split` semantics: `perm = np.random.default_rng(split_seed)
    .permutation(n)`, the first `ceil(val_fraction * n)` (at least 1, at most n-1) go to val,
    written in permutation order; train is written in source order (the loader shuffles chunks).
    Given SlimPajama-6B's own parquet files (`data/train-*.parquet` in name order) this selects
    the same val documents, in the same order, as the hub path.
  * `shakespeare`: the vendored corpus (42 plays, one document each, in name order). Its
    val_fraction defaults to 0.05, which holds out ceil(0.05 * 42) = 3 whole plays chosen by the
    same seeded permutation (about 7% of the text): enough val tokens (~10^5) for a stable loss,
    and no play is split between train and val.
  * `shakespeare-dev`: the training plays of `shakespeare` only (its 3 validation plays are left
    out entirely), split again the same way: 37 plays to train on and 2 to evaluate on. Choose
    hyper-parameters on this, so that the validation plays of `shakespeare` stay unseen until
    the final measurement.
  * `text`: like `--source` above with default set name "text".

Each document's tokens (tiktoken gpt2, `encode_ordinary`, no special tokens) are followed by EOT
50256. Empty (or whitespace-only) documents are skipped and counted. Unlike llm-baselines, which
would write a lone EOT for an empty document, none is written. Undecodable bytes are replaced with
U+FFFD and counted. A malformed JSON line stops the run with its file and line number, or is
skipped and counted with `--skip-bad`.

Output files are written under hidden temporary names and renamed at the end (meta.json last), so
an interrupted run never leaves files that look finished; a re-run starts over.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import dataclasses
import datetime
import fcntl
import json
import math
import multiprocessing
import os
import signal
import sys
import time
from collections import deque
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Iterator

import numpy as np

from minillm_jax.data import DataError
from minillm_jax.data import format as fmt
from minillm_jax.data.sources import LocalSource, ShakespeareSource, set_name_of
from minillm_jax.tokenizer import EOT_TOKEN, GPT2_TIKTOKEN_SHA256, get_tokenizer

DATASETS = ("slimpajama", "shakespeare", "shakespeare-dev", "text")
DEFAULT_VAL_FRACTION = {"slimpajama": 0.0005, "text": 0.0005, "shakespeare": 0.05,
                        "shakespeare-dev": 0.05}
VENDORED = ("shakespeare", "shakespeare-dev")
SPLIT_SEED = 2357
HUB_DATASET = "DKYoon/SlimPajama-6B"
TOKENIZER = "gpt2"
GROUP_CHARS = 1 << 20  # characters of text per tokenizer task
AUTO_PARALLEL_BYTES = 64 << 20  # below this source size, tokenize in-process (pool start-up ~1 s)
_UINT16_MAX = int(np.iinfo(np.uint16).max)

# An item of the document stream: (split, val rank or None, text or None if skipped, set name).
Item = tuple[str, "int | None", "str | None", str]


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# ---------------------------------------------------------------------------------------------
# Tokenization (runs in worker processes)


def _init_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and shuts us down
    get_tokenizer(TOKENIZER)


def _encode_group(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Tokens of `texts`, each followed by EOT, as one uint16 array; per-document token counts
    (EOT included) and UTF-8 byte counts; the number of documents whose lone surrogates were
    replaced."""
    enc = get_tokenizer(TOKENIZER)
    lengths = np.empty(len(texts), np.int64)
    nbytes = np.empty(len(texts), np.int64)
    flat: list[int] = []
    fixed = 0
    for i, text in enumerate(texts):
        try:
            nbytes[i] = len(text.encode("utf-8"))
        except UnicodeEncodeError:  # lone surrogates, e.g. from "\ud800" escapes in JSON
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            nbytes[i] = len(text.encode("utf-8"))
            fixed += 1
        ids = enc.encode_ordinary(text)
        flat.extend(ids)
        flat.append(EOT_TOKEN)
        lengths[i] = len(ids) + 1
    tokens = np.array(flat, dtype=np.int64)
    if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) > _UINT16_MAX):
        bad = int(tokens.max()) if int(tokens.max()) > _UINT16_MAX else int(tokens.min())
        raise DataError(f"token id {bad} from tokenizer {getattr(enc, 'name', '?')!r} does not fit "
                        "in uint16, the dtype of the .bin files")
    return tokens.astype(np.uint16), lengths, nbytes, fixed


class _InlineExecutor:
    """Runs tasks at submission, in this process (num_proc=1)."""

    def submit(self, fn, *args) -> cf.Future:
        future: cf.Future = cf.Future()
        future.set_result(fn(*args))
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


# ---------------------------------------------------------------------------------------------
# Bookkeeping


@dataclasses.dataclass
class _SplitStats:
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
class _Group:
    split: str
    texts: list[str] = dataclasses.field(default_factory=list)
    names: list[str] = dataclasses.field(default_factory=list)
    ranks: list[int] = dataclasses.field(default_factory=list)
    chars: int = 0


class _Progress:
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


# ---------------------------------------------------------------------------------------------
# Sources -> document streams


@dataclasses.dataclass
class _Plan:
    items: Iterator[Item]
    total: int
    description: str
    split: dict[str, Any]
    nbytes: int | None
    read_stats: Any


def _split_ranks(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, int]:
    """rank_of[i] = position of record i in the val split, or -1 for train."""
    n_val = min(max(1, math.ceil(val_fraction * n)), n - 1)  # same expression as datasets
    perm = np.random.default_rng(seed).permutation(n)
    rank_of = np.full(n, -1, np.int64)
    rank_of[perm[:n_val]] = np.arange(n_val)
    return rank_of, n_val


def _local_plan(src: LocalSource | ShakespeareSource, val_fraction: float, seed: int) -> _Plan:
    n = src.count()
    if n == 0:
        raise DataError(f"{src.describe()} holds no documents")
    if n < 2:
        raise DataError(f"{src.describe()} holds only 1 document; need at least 2 "
                        "(one for train, one for val)")
    rank_of, n_val = _split_ranks(n, val_fraction, seed)

    def items() -> Iterator[Item]:
        count = 0
        for text, name in src.records():
            if count >= n:
                count += 1
                break
            rank = int(rank_of[count])
            count += 1
            yield ("val", rank, text, name) if rank >= 0 else ("train", None, text, name)
        if count != n:
            raise DataError(f"{src.describe()} changed while it was read "
                            f"({n} records counted, {'more' if count > n else count} read)")

    split = {"method": "seeded permutation of records, datasets.train_test_split semantics: "
                       "val = default_rng(seed).permutation(n)[:ceil(val_fraction*n)], written in "
                       "permutation order; train written in source order",
             "split_seed": seed, "val_fraction": val_fraction, "records": n, "val_records": n_val}
    return _Plan(items(), n, src.describe(), split, getattr(src, "nbytes", None), src.stats)


def _hub_plan(val_fraction: float, seed: int, num_proc: int) -> _Plan:
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"--dataset slimpajama without --source reads {HUB_DATASET} from the Hugging Face hub "
            "and needs the `datasets` package: pip install 'minillm-jax[data]', or pass --source "
            "with local .parquet/.jsonl/.jsonl.zst/.txt files") from None
    _log(f"loading {HUB_DATASET} with datasets (about 14 GB download on first use) ...")
    try:
        dataset = datasets.load_dataset(HUB_DATASET, num_proc=num_proc)
        split = dataset["train"].train_test_split(test_size=val_fraction, seed=seed, shuffle=True)
    except Exception as err:  # offline: ConnectionError, LocalEntryNotFoundError, OfflineModeIsEnabled...
        first = (str(err).strip().splitlines() or [""])[0][:300]
        raise DataError(f"could not load {HUB_DATASET} from the hub ({type(err).__name__}: {first}); "
                        "check network access, or pass --source with local files") from None
    val_ds, train_ds = split["test"], split["train"]

    def items() -> Iterator[Item]:
        for name, ds in (("val", val_ds), ("train", train_ds)):
            rank = 0
            for batch in ds.iter(batch_size=1000):
                texts = batch["text"]
                metas = batch.get("meta") or [None] * len(texts)
                for text, meta in zip(texts, metas):
                    yield (name, rank if name == "val" else None, "" if text is None else text,
                           set_name_of(meta, "unknown"))
                    rank += 1

    info = {"method": f"{HUB_DATASET}['train'].train_test_split(test_size={val_fraction}, "
                      f"seed={seed}, shuffle=True); 'test' -> val (llm-baselines)",
            "split_seed": seed, "val_fraction": val_fraction, "records": len(val_ds) + len(train_ds),
            "val_records": len(val_ds)}
    return _Plan(items(), len(val_ds) + len(train_ds),
                 f"hub {HUB_DATASET} (datasets {datasets.__version__})", info, None, None)


# ---------------------------------------------------------------------------------------------
# The run


def _tmp(out_dir: str, name: str) -> str:
    return os.path.join(out_dir, f".{name}.tmp-{os.getpid()}")


def _clear(out_dir: str) -> None:
    """Remove a previous (finished or partial) dataset: meta.json first, so the directory stops
    looking finished, then the token files and stale temporaries of killed runs."""
    names = (fmt.META_FILE, fmt.TRAIN_FILE, fmt.VAL_FILE)
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(out_dir, name))
    for entry in os.listdir(out_dir):
        if any(entry.startswith(f".{name}.tmp-") for name in names):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(out_dir, entry))


@contextlib.contextmanager
def _dir_lock(out_dir: str) -> Iterator[None]:
    """Exclusive lock on the output directory, so concurrent prepares (e.g. one per host of a
    multi-host job calling ensure_dataset) never interleave."""
    with open(os.path.join(out_dir, ".prepare.lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _fsync_write(path: str, write) -> None:
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


class _Writer:
    """Consumes the document stream: groups documents, tokenizes groups (in order), writes."""

    def __init__(self, plan: _Plan, out_dir: str, executor: Any, max_inflight: int,
                 group_chars: int, progress: _Progress):
        self.plan, self.out_dir, self.executor = plan, out_dir, executor
        self.max_inflight, self.group_chars, self.progress = max_inflight, group_chars, progress
        self.stats = {"train": _SplitStats(), "val": _SplitStats()}
        self.pending = {"train": _Group("train"), "val": _Group("val")}
        self.inflight: deque[tuple[_Group, cf.Future]] = deque()
        self.val_pieces: list[tuple[int, np.ndarray]] = []
        self.fixed = self.records = self.done_bytes = 0
        self.train_file = open(_tmp(out_dir, fmt.TRAIN_FILE), "wb")

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
        self.pending[split] = _Group(split)
        while len(self.inflight) >= self.max_inflight:
            self._drain_one()
        self.inflight.append((group, self.executor.submit(_encode_group, group.texts)))
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
        _fsync_write(_tmp(self.out_dir, fmt.VAL_FILE),
                     lambda f: [piece.tofile(f) for _, piece in self.val_pieces])

    def close(self) -> None:
        if not self.train_file.closed:
            self.train_file.close()


def prepare_dataset(dataset: str, out_dir: str, *, source: str | None = None,
                    num_proc: int | None = None, val_fraction: float | None = None,
                    split_seed: int = SPLIT_SEED, skip_bad: bool = False, force: bool = False,
                    progress: bool = True, group_chars: int = GROUP_CHARS,
                    text_field: str = "text") -> dict[str, Any]:
    """Prepares `dataset` into `out_dir` (see the module docstring); returns the meta dict.

    A directory that already holds a finished dataset is left alone unless `force`.
    num_proc: tokenizer processes; None = all cores for sources over 64 MB, else in-process.
    """
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}: expected one of {', '.join(DATASETS)}")
    if dataset in VENDORED and source:
        raise DataError(f"--dataset {dataset} uses the vendored corpus; use --dataset text "
                        "--source ... for other files")
    if dataset == "text" and not source:
        raise DataError("--dataset text needs --source (a directory or glob of "
                        ".parquet/.jsonl/.jsonl.zst/.txt files)")
    val_fraction = DEFAULT_VAL_FRACTION[dataset] if val_fraction is None else float(val_fraction)
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if num_proc is not None and num_proc < 1:
        raise DataError(f"num_proc must be >= 1, got {num_proc}")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise DataError(f"output {out_dir} exists and is not a directory")
    if not force and fmt.is_prepared(out_dir):  # fast path, works on read-only directories
        _log(f"{out_dir} already holds a prepared dataset (use --force to redo it)")
        return fmt.load_meta(out_dir)
    os.makedirs(out_dir, exist_ok=True)

    with _dir_lock(out_dir):
        if not force and fmt.is_prepared(out_dir):
            _log(f"{out_dir} already holds a prepared dataset (use --force to redo it)")
            return fmt.load_meta(out_dir)
        _clear(out_dir)
        start = time.perf_counter()
        if dataset == "shakespeare":
            plan = _local_plan(ShakespeareSource(), val_fraction, split_seed)
        elif dataset == "shakespeare-dev":
            plan = _local_plan(_training_plays(split_seed), val_fraction, split_seed)
        elif source:
            local = LocalSource(source, default_set="unknown" if dataset == "slimpajama" else "text",
                                skip_bad=skip_bad, text_field=text_field)
            _warn_mixed_splits(local.files)
            plan = _local_plan(local, val_fraction, split_seed)
        else:
            plan = _hub_plan(val_fraction, split_seed, num_proc or _cpu_count())
        if num_proc is None:
            num_proc = 1 if plan.nbytes is not None and plan.nbytes < AUTO_PARALLEL_BYTES else _cpu_count()
        if num_proc > 1:
            executor: Any = cf.ProcessPoolExecutor(
                num_proc, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker)
        else:
            executor = _InlineExecutor()
        bar = _Progress(f"tokenizing {dataset}", plan.total, progress)
        writer = None
        try:
            try:
                writer = _Writer(plan, out_dir, executor, 2 * num_proc, group_chars, bar)
                writer.run()
            finally:
                executor.shutdown(wait=True, cancel_futures=True)
                bar.close()
            writer.finish_files()
            meta = _finish(dataset, out_dir, plan, writer, num_proc, time.perf_counter() - start)
        except BaseException:
            if writer is not None:
                writer.close()
            _clear_tmp(out_dir)
            raise
    return meta


def _warn_mixed_splits(files: list[str]) -> None:
    """SlimPajama-6B's repository also holds validation-*/test-* parquet files, which
    llm-baselines never uses; warn when a directory source picks them up with train-*."""
    names = [os.path.basename(p) for p in files]
    if any(n.startswith("train-") for n in names) and any(
            n.startswith(("validation-", "test-")) for n in names):
        _log("warning: the source mixes train-* with validation-*/test-* files, and all of them "
             "are read; llm-baselines uses only the train split (pass e.g. --source "
             "'DIR/data/train-*.parquet')")


def _clear_tmp(out_dir: str) -> None:
    for name in (fmt.TRAIN_FILE, fmt.VAL_FILE, fmt.META_FILE):
        with contextlib.suppress(FileNotFoundError):
            os.remove(_tmp(out_dir, name))


def _finish(dataset: str, out_dir: str, plan: _Plan, writer: _Writer, num_proc: int,
            seconds: float) -> dict[str, Any]:
    train, val = writer.stats["train"], writer.stats["val"]
    bad = plan.read_stats.bad_records if plan.read_stats else 0
    replaced = (plan.read_stats.replaced_documents if plan.read_stats else 0) + writer.fixed
    empty = train.empty_documents + val.empty_documents
    if train.documents + val.documents == 0:
        raise DataError(f"{plan.description} holds no non-empty documents ({empty} empty, "
                        f"{bad} malformed)")
    if train.documents == 0:
        raise DataError(f"the train split is empty: {plan.description} has too few non-empty "
                        "documents; lower --val-fraction")
    if val.documents == 0:
        raise DataError(f"the val split is empty: its {plan.split['val_records']} document(s) were "
                        "empty or malformed; raise --val-fraction or use another --split-seed")
    total_bytes = train.bytes + val.bytes
    mb_per_s = total_bytes / 1e6 / max(seconds, 1e-9)
    meta = {
        "format": fmt.FORMAT,
        "dataset": dataset,
        "dtype": "uint16",
        "tokenizer": {"name": TOKENIZER, "encoding": "tiktoken r50k_base (GPT-2 BPE)",
                      "rank_file_sha256": GPT2_TIKTOKEN_SHA256, "eot_token": EOT_TOKEN,
                      "vocab_size": get_tokenizer(TOKENIZER).n_vocab,
                      "eot": "appended after every document"},
        "source": plan.description,
        "split": plan.split,
        "train": train.as_dict(),
        "val": val.as_dict(),
        "skipped": {"empty_documents": empty, "bad_records": bad, "replaced_documents": replaced},
        "prepare": {"seconds": round(seconds, 3), "mb_per_s": round(mb_per_s, 3),
                    "num_proc": num_proc,
                    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
    }
    os.replace(_tmp(out_dir, fmt.TRAIN_FILE), os.path.join(out_dir, fmt.TRAIN_FILE))
    os.replace(_tmp(out_dir, fmt.VAL_FILE), os.path.join(out_dir, fmt.VAL_FILE))
    text = json.dumps(meta, indent=2) + "\n"
    _fsync_write(_tmp(out_dir, fmt.META_FILE), lambda f: f.write(text.encode("utf-8")))
    os.replace(_tmp(out_dir, fmt.META_FILE), os.path.join(out_dir, fmt.META_FILE))
    with contextlib.suppress(OSError):  # make the renames durable
        fd = os.open(out_dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    skipped = ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in meta["skipped"].items() if v)
    _log(f"prepared {out_dir}: train {train.tokens:,} tokens ({train.documents:,} docs, "
         f"{train.bytes / 1e6:,.1f} MB), val {val.tokens:,} tokens ({val.documents:,} docs, "
         f"{val.bytes / 1e6:,.2f} MB)" + (f"; skipped/replaced: {skipped}" if skipped else ""))
    _log(f"tokenized {total_bytes / 1e6:,.1f} MB in {seconds:.1f} s = {mb_per_s:.1f} MB/s "
         f"({num_proc} process{'es' if num_proc > 1 else ''})")
    return meta


def _training_plays(split_seed: int) -> ShakespeareSource:
    """The vendored corpus without the validation plays of `--dataset shakespeare`."""
    source = ShakespeareSource()
    rank_of, _ = _split_ranks(source.count(), DEFAULT_VAL_FRACTION["shakespeare"], split_seed)
    source.keep([name for name, rank in zip(source.names, rank_of) if rank < 0])
    return source


def ensure_dataset(dataset: str, data_dir: str) -> None:
    """Makes sure `data_dir` holds a finished dataset. The vendored corpus (`shakespeare`,
    `shakespeare-dev`) is prepared automatically (a few seconds); any other dataset must be
    prepared beforehand."""
    if fmt.is_prepared(data_dir):
        return
    if dataset in VENDORED:
        _log(f"preparing the vendored {dataset} corpus into {data_dir}")
        prepare_dataset(dataset, data_dir, num_proc=1)
        return
    raise DataError(f"no prepared data in {data_dir}: run `python -m minillm_jax.data.prepare "
                    f"--dataset {dataset} --out {data_dir} [--source ...]`")


# ---------------------------------------------------------------------------------------------
# CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m minillm_jax.data.prepare",
        description="Tokenize a corpus (gpt2 tiktoken, EOT after each document) into "
                    "train.bin / val.bin (uint16) and meta.json.")
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--source", help="directory, file or glob of .parquet/.jsonl/.jsonl.zst/.txt "
                   "files (slimpajama: default = the hub; text: required)")
    p.add_argument("--num-proc", type=int, default=None,
                   help="tokenizer processes (default: all cores; in-process for sources < 64 MB)")
    p.add_argument("--val-fraction", type=float, default=None,
                   help="fraction of documents held out for val (default: slimpajama/text 0.0005, "
                   "shakespeare 0.05); at least 1 document")
    p.add_argument("--split-seed", type=int, default=SPLIT_SEED)
    p.add_argument("--skip-bad", action="store_true",
                   help="skip (and count) malformed JSON lines instead of stopping")
    p.add_argument("--text-field", default="text", help="JSON/parquet field holding the text")
    p.add_argument("--force", action="store_true", help="redo a directory that is already prepared")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        prepare_dataset(args.dataset, args.out, source=args.source, num_proc=args.num_proc,
                        val_fraction=args.val_fraction, split_seed=args.split_seed,
                        skip_bad=args.skip_bad, force=args.force, progress=not args.no_progress,
                        text_field=args.text_field)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # disk full, permissions: one line as well
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: no finished output was written (temporary files removed)",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
