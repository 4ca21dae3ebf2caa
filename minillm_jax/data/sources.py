"""Document readers: local .parquet / .jsonl / .jsonl.zst / .txt files and the vendored Shakespeare.

A source yields *records* in a fixed order. A record is `(text, set_name)`; `text` is None for a
malformed record that was skipped (`--skip-bad`). Records are numbered by position, and the split
assigns record numbers to train/val, so `count()` must agree exactly with `records()`:
  - .txt: one record per file (the whole file is one document);
  - .jsonl / .jsonl.zst: one record per non-blank line (`{"text": ..., "meta": {"redpajama_set_name": ...}}`);
  - .parquet: one record per row (a `text` column and an optional `meta` struct/JSON column).
Undecodable UTF-8 bytes are replaced with U+FFFD and counted in `stats.replaced_documents`.
"""

from __future__ import annotations

import dataclasses
import glob
import io
import json
import os
import tarfile
from importlib import resources
from typing import Any, Iterator

from minillm_jax.data import DataError

EXTENSIONS = (".jsonl.zst", ".jsonl", ".parquet", ".txt")
SHAKESPEARE_ASSET = "shakespeare.tar.xz"


@dataclasses.dataclass
class ReadStats:
    bad_records: int = 0  # malformed JSON lines / records skipped with --skip-bad
    replaced_documents: int = 0  # documents in which undecodable bytes were replaced


def _kind(path: str) -> str | None:
    lower = path.lower()
    for ext in EXTENSIONS:
        if lower.endswith(ext):
            return ext
    return None


def resolve_files(source: str) -> list[str]:
    """Files of `source` (a directory, searched recursively, a file, or a glob), in sorted order."""
    if os.path.isdir(source):
        found = []
        for root, dirs, files in os.walk(source):
            dirs.sort()
            found += [os.path.join(root, f) for f in files if _kind(f) and not f.startswith(".")]
        files = sorted(found)
        if not files:
            raise DataError(f"source {source} has no {', '.join(EXTENSIONS)} files")
        return files
    matches = sorted(p for p in glob.glob(source, recursive=True) if os.path.isfile(p))
    if not matches:
        raise DataError(f"source {source} matches no files")
    unsupported = [p for p in matches if not _kind(p)]
    if unsupported:
        raise DataError(f"unsupported source file {unsupported[0]}: expected one of "
                        f"{', '.join(EXTENSIONS)}")
    return matches


def decode(raw: bytes, stats: ReadStats) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        stats.replaced_documents += 1
        return raw.decode("utf-8", errors="replace")


def set_name_of(meta: Any, default: str) -> str:
    """`meta.redpajama_set_name` from a dict or JSON string, else `default`."""
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except ValueError:
            return default
    if isinstance(meta, dict):
        name = meta.get("redpajama_set_name")
        if isinstance(name, str) and name:
            return name
    return default


class LocalSource:
    """Documents from local files; see the module docstring for the formats."""

    def __init__(self, source: str, *, default_set: str, skip_bad: bool = False,
                 text_field: str = "text"):
        self.source = source
        self.files = resolve_files(source)
        self.default_set = default_set
        self.skip_bad = skip_bad
        self.text_field = text_field
        self.stats = ReadStats()

    @property
    def nbytes(self) -> int:
        return sum(os.path.getsize(p) for p in self.files)

    def describe(self) -> str:
        kinds: dict[str, int] = {}
        for p in self.files:
            kinds[_kind(p)] = kinds.get(_kind(p), 0) + 1
        parts = ", ".join(f"{n} {k.lstrip('.')}" for k, n in sorted(kinds.items()))
        return f"local files {os.path.abspath(self.source)} ({len(self.files)} files: {parts})"

    # -- counting (pass 1) ------------------------------------------------------------------
    def count(self) -> int:
        return sum(self._count_file(p) for p in self.files)

    def _count_file(self, path: str) -> int:
        kind = _kind(path)
        if kind == ".txt":
            return 1
        if kind == ".parquet":
            return self._parquet(path).metadata.num_rows
        return sum(1 for _, line in self._lines(path) if line.strip())

    def records(self) -> Iterator[tuple[str | None, str]]:
        for path in self.files:
            kind = _kind(path)
            if kind == ".txt":
                with open(path, "rb") as f:
                    yield decode(f.read(), self.stats), self.default_set
            elif kind == ".parquet":
                yield from self._parquet_records(path)
            else:
                yield from self._jsonl_records(path)

    def _open_lines(self, path: str):
        if _kind(path) == ".jsonl.zst":
            try:
                import zstandard
            except ImportError:
                raise DataError(f"reading {path} needs the `zstandard` package: "
                                "pip install 'minillm-jax[data]'") from None
            raw = open(path, "rb")
            try:
                reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True,
                                                                    closefd=True)
            except Exception:
                raw.close()
                raise
            return io.BufferedReader(reader, buffer_size=1 << 20)
        return open(path, "rb", buffering=1 << 20)

    def _bad(self, path: str, lineno: int, why: str) -> None:
        if not self.skip_bad:
            raise DataError(f"{path}:{lineno}: {why}; fix the file or pass --skip-bad to skip "
                            "such lines")
        self.stats.bad_records += 1

    def _lines(self, path: str) -> Iterator[tuple[int, bytes]]:
        """(1-based line number, raw line) of a .jsonl or .jsonl.zst file."""
        try:
            from zstandard import ZstdError
        except ImportError:  # plain .jsonl needs no zstandard
            ZstdError = OSError  # noqa: N806
        lineno = 0
        try:
            with self._open_lines(path) as f:
                for line in f:
                    lineno += 1
                    yield lineno, line
        except (ZstdError, OSError) as err:
            raise DataError(f"{path}: cannot read after line {lineno} ({err})") from None

    def _jsonl_records(self, path: str) -> Iterator[tuple[str | None, str]]:
        for lineno, line in self._lines(path):
            if not line.strip():
                continue
            text = decode(line, self.stats)
            try:
                record = json.loads(text)
            except ValueError as err:
                why = f"{err.msg} at column {err.colno}" if hasattr(err, "colno") else str(err)
                self._bad(path, lineno, f"malformed JSON ({why})")
                yield None, self.default_set
                continue
            value = record.get(self.text_field) if isinstance(record, dict) else None
            if not isinstance(value, str):
                what = "not a JSON object" if not isinstance(record, dict) else (
                    f"no string {self.text_field!r} field")
                self._bad(path, lineno, f"malformed record ({what})")
                yield None, self.default_set
                continue
            yield value, set_name_of(record.get("meta"), self.default_set)

    def _parquet(self, path: str):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError(f"reading {path} needs the `pyarrow` package: "
                            "pip install 'minillm-jax[data]'") from None
        try:
            return pq.ParquetFile(path)
        except Exception as err:  # pyarrow raises ArrowInvalid/OSError for corrupt files
            raise DataError(f"{path}: not a readable parquet file ({err})") from None

    def _parquet_records(self, path: str) -> Iterator[tuple[str | None, str]]:
        import pyarrow as pa
        pf = self._parquet(path)
        schema = pf.schema_arrow
        if self.text_field not in schema.names:
            raise DataError(f"{path}: no {self.text_field!r} column (columns: "
                            f"{', '.join(schema.names)})")
        kind = schema.field(self.text_field).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)
                or pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
                or str(kind) in ("string_view", "binary_view")):
            raise DataError(f"{path}: column {self.text_field!r} has type {kind}, expected string")
        columns = [self.text_field] + (["meta"] if "meta" in schema.names else [])
        try:
            for batch in pf.iter_batches(batch_size=1024, columns=columns):
                texts = batch.column(0).to_pylist()
                metas = batch.column(1).to_pylist() if len(columns) > 1 else [None] * len(texts)
                for text, meta in zip(texts, metas):
                    if isinstance(text, bytes):
                        text = decode(text, self.stats)
                    yield ("" if text is None else text), set_name_of(meta, self.default_set)
        except (OSError, pa.ArrowException) as err:
            raise DataError(f"{path}: cannot read parquet data ({err})") from None


def shakespeare_path() -> str:
    return str(resources.files("minillm_jax") / "assets" / SHAKESPEARE_ASSET)


class ShakespeareSource:
    """The vendored corpus: 42 plays, one .txt member (= one document) each, in name order."""

    default_set = "shakespeare"

    def __init__(self) -> None:
        self.path = shakespeare_path()
        self.stats = ReadStats()
        with tarfile.open(self.path, "r:xz") as tar:  # one pass (xz cannot seek back); ~5 MB
            self._raw = {m.name: tar.extractfile(m).read() for m in tar
                         if m.isfile() and m.name.endswith(".txt")}
        self._names = sorted(self._raw)
        if not self._names:
            raise DataError(f"{self.path} holds no .txt documents")

    @property
    def nbytes(self) -> int:
        return sum(len(raw) for raw in self._raw.values())

    def describe(self) -> str:
        return f"vendored minillm_jax/assets/{SHAKESPEARE_ASSET} ({len(self._names)} plays, one document each)"

    def count(self) -> int:
        return len(self._names)

    def records(self) -> Iterator[tuple[str | None, str]]:
        for name in self._names:
            yield decode(self._raw[name], self.stats), self.default_set

    def keep(self, names: list[str]) -> None:
        """Restricts the corpus to these plays (e.g. the training plays only)."""
        self._names = [n for n in self._names if n in set(names)]

    @property
    def names(self) -> list[str]:
        return list(self._names)
