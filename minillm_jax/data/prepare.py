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

Output files are written under hidden temporary names and renamed at the end, meta.json last: it is
the completion marker, and a directory without it is never read as data (the loader says to rerun
prepare). An interrupted or killed run never leaves files that look finished; a re-run starts over
and writes the same bytes (meta.json differs only in its "prepare" timings). meta.json also
records each token file's sha256, sampled digest and largest token, which every run checks
(minillm_jax/data/integrity.py).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import datetime
import fcntl
import json
import multiprocessing
import os
import signal
import sys
import time
from typing import Any, Iterator

import numpy as np

from minillm_jax.data import DataError
from minillm_jax.data import format as fmt
from minillm_jax.data.integrity import describe_file
from minillm_jax.data.plans import Plan, hub_plan, local_plan, split_ranks
from minillm_jax.data.sources import LocalSource, ShakespeareSource
from minillm_jax.data.writer import Encoded, Progress, Writer, fsync_write, tmp_path
from minillm_jax.data.tokenizer import EOT_TOKEN, GPT2_TIKTOKEN_SHA256, get_tokenizer

DATASETS = ("slimpajama", "shakespeare", "shakespeare-dev", "text")
DEFAULT_VAL_FRACTION = {"slimpajama": 0.0005, "text": 0.0005, "shakespeare": 0.05,
                        "shakespeare-dev": 0.05}
VENDORED = ("shakespeare", "shakespeare-dev")
SPLIT_SEED = 2357
TOKENIZER = "gpt2"
GROUP_CHARS = 1 << 20  # characters of text per tokenizer task
AUTO_PARALLEL_BYTES = 64 << 20  # below this source size, tokenize in-process (pool start-up ~1 s)
_UINT16_MAX = int(np.iinfo(np.uint16).max)

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


def _encode_group(texts: list[str]) -> Encoded:
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
# The run


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
            plan = local_plan(ShakespeareSource(), val_fraction, split_seed)
        elif dataset == "shakespeare-dev":
            plan = local_plan(_training_plays(split_seed), val_fraction, split_seed)
        elif source:
            local = LocalSource(source, default_set="unknown" if dataset == "slimpajama" else "text",
                                skip_bad=skip_bad, text_field=text_field)
            _warn_mixed_splits(local.files)
            plan = local_plan(local, val_fraction, split_seed)
        else:
            plan = hub_plan(val_fraction, split_seed, num_proc or _cpu_count())
        if num_proc is None:
            num_proc = 1 if plan.nbytes is not None and plan.nbytes < AUTO_PARALLEL_BYTES else _cpu_count()
        if num_proc > 1:
            executor: Any = cf.ProcessPoolExecutor(
                num_proc, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker)
        else:
            executor = _InlineExecutor()
        bar = Progress(f"tokenizing {dataset}", plan.total, progress)
        writer = None
        try:
            try:
                writer = Writer(plan, out_dir, executor, 2 * num_proc, group_chars, bar,
                                encode=_encode_group)  # looked up now: tests replace it
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
            os.remove(tmp_path(out_dir, name))


def _finish(dataset: str, out_dir: str, plan: Plan, writer: Writer, num_proc: int,
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
        # sha256, sample_sha256 and max_token of each file: the checks of minillm_jax/data/integrity.py
        "train": {**train.as_dict(), **describe_file(tmp_path(out_dir, fmt.TRAIN_FILE))},
        "val": {**val.as_dict(), **describe_file(tmp_path(out_dir, fmt.VAL_FILE))},
        "skipped": {"empty_documents": empty, "bad_records": bad, "replaced_documents": replaced},
        "prepare": {"seconds": round(seconds, 3), "mb_per_s": round(mb_per_s, 3),
                    "num_proc": num_proc,
                    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
    }
    os.replace(tmp_path(out_dir, fmt.TRAIN_FILE), os.path.join(out_dir, fmt.TRAIN_FILE))
    os.replace(tmp_path(out_dir, fmt.VAL_FILE), os.path.join(out_dir, fmt.VAL_FILE))
    text = json.dumps(meta, indent=2) + "\n"
    fsync_write(tmp_path(out_dir, fmt.META_FILE), lambda f: f.write(text.encode("utf-8")))
    os.replace(tmp_path(out_dir, fmt.META_FILE), os.path.join(out_dir, fmt.META_FILE))
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
    rank_of, _ = split_ranks(source.count(), DEFAULT_VAL_FRACTION["shakespeare"], split_seed)
    source.keep([name for name, rank in zip(source.names, rank_of) if rank < 0])
    return source


def ensure_dataset(dataset: str, data_dir: str) -> None:
    """Makes sure `data_dir` holds a finished dataset. The vendored corpus (`shakespeare`,
    `shakespeare-dev`) is prepared automatically (a few seconds); any other dataset must be
    prepared beforehand."""
    if fmt.is_prepared(data_dir):
        return
    if os.path.exists(os.path.join(data_dir, fmt.META_FILE)):
        fmt.load_meta(data_dir)  # finished once and damaged since: say so, never redo silently
        return
    if dataset in VENDORED:
        _log(f"preparing the vendored {dataset} corpus into {data_dir}")
        prepare_dataset(dataset, data_dir, num_proc=1)
        return
    fmt.load_meta(data_dir, dataset)  # raises: what is missing and the command to run


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
    from minillm_jax.config.cli import run_command

    args = _parser().parse_args(argv)

    def work() -> None:
        prepare_dataset(args.dataset, args.out, source=args.source, num_proc=args.num_proc,
                        val_fraction=args.val_fraction, split_seed=args.split_seed,
                        skip_bad=args.skip_bad, force=args.force, progress=not args.no_progress,
                        text_field=args.text_field)

    # OSError (disk full, permissions) is one line as well, with its own status.
    return run_command(work, {DataError: 2, OSError: 1},
                       interrupted="interrupted: no finished output was written "
                                   "(temporary files removed)")


if __name__ == "__main__":
    sys.exit(main())
