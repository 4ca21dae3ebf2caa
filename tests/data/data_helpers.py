"""Helpers for the data tests: tiny corpora in every source format, written into tmp_path."""

from __future__ import annotations

import json
import os

import numpy as np

# A small multilingual corpus; document 3 is long enough to span several chunks.
DOCS = [
    "The quick brown fox jumps over the lazy dog.",
    "Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich. ✓",
    "def f(x):\n    return x * 2  # code\n",
    " ".join(f"word{i}" for i in range(300)),
    "日本語のテキストも大丈夫です。",
    "<|endoftext|> is ordinary text here, not a special token.",
    "Numbers 12345 67890 and emoji 🙂🙃.",
    "Last document.\n\n",
]
SETS = ["RedPajamaWikipedia", "RedPajamaC4", "RedPajamaGithub", "RedPajamaC4",
        "RedPajamaWikipedia", "RedPajamaArXiv", "RedPajamaC4", "RedPajamaBook"]


def write_jsonl(path, docs, sets=None, compress=False):
    lines = [json.dumps({"text": d, "meta": {"redpajama_set_name": s}})
             for d, s in zip(docs, sets or ["x"] * len(docs))]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    if compress:
        import zstandard
        data = zstandard.ZstdCompressor().compress(data)
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def write_parquet(path, docs, sets=None):
    import pyarrow as pa
    import pyarrow.parquet as pq
    meta = [{"redpajama_set_name": s} for s in (sets or ["x"] * len(docs))]
    pq.write_table(pa.table({"text": docs, "meta": meta}), str(path), row_group_size=3)
    return str(path)


def write_txt_dir(directory, docs):
    os.makedirs(directory, exist_ok=True)
    for i, d in enumerate(docs):
        with open(os.path.join(directory, f"doc{i:03d}.txt"), "w", encoding="utf-8") as f:
            f.write(d)
    return str(directory)


def write_tokens(directory, train, val):
    """A prepared directory holding the given token arrays (no tokenizer involved)."""
    os.makedirs(directory, exist_ok=True)
    np.asarray(train, np.uint16).tofile(os.path.join(directory, "train.bin"))
    np.asarray(val, np.uint16).tofile(os.path.join(directory, "val.bin"))
    meta = {"dataset": "synthetic", "train": {"tokens": len(train), "bytes": 4 * len(train)},
            "val": {"tokens": len(val), "bytes": 4 * len(val)}}
    with open(os.path.join(directory, "meta.json"), "w") as f:
        json.dump(meta, f)
    return str(directory)
