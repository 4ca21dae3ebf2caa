"""Whether a prepared directory still holds what prepare wrote, checked before every run at a cost
that does not grow with the data: SlimPajama's train.bin is many GB, and reading it whole at
every start (or resume) would take minutes, so prepare records what a full read would give and
the start reads a bounded sample.

prepare records per token file, in meta.json's "train" / "val": `sha256` (the whole file, for
`sha256sum`; never recomputed at start), `sample_sha256` (below) and `max_token`. `check_data`:

  * sizes (free): each file is present, non-empty, a whole number of uint16 tokens and the size
    meta.json records: a truncated, emptied or appended file is refused;
  * content: `sample_sha256` of the file now against meta.json's, and against the fingerprint a
    resumed checkpoint was saved with. Files up to FULL_BYTES (every val split in practice, the
    shakespeare corpus) are read whole: any change is seen. Larger files are read at
    SAMPLE_BLOCKS blocks of BLOCK_BYTES spread evenly from the first byte to the last (4 MiB):
    a shuffle or reorder in place, a re-prepare from another source or seed, a file overwritten
    by another are seen; a few tokens changed outside the sampled blocks are NOT (one changed
    token in a 12 GB file is missed with probability ~99.97%): compare `sha256sum` with
    meta.json's `sha256` for that;
  * token range: every token must be below the model's vocab_size (a larger id embeds as NaN
    or is a target the output layer lacks). Files read whole are checked exactly; larger ones
    through the sampled blocks plus meta.json's `max_token`. When meta.json records no
    `max_token` (an older prepare, a hand-made directory) or the content differs from what
    prepare wrote, the file is scanned whole in chunks: the only slow path (disk speed).

A changed content is refused unless the config allows it (config.allow_data_change); damage that
cannot be trained on (sizes, token range) always is.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np

from minillm_jax.data.format import SPLITS, TOKEN_DTYPE, DataError, load_meta, prepare_command

SAMPLE_BLOCKS = 64
BLOCK_BYTES = 64 << 10
FULL_BYTES = 64 << 20  # files up to this size are read whole at every start (< 0.2 s)
CHUNK_BYTES = 16 << 20  # read size of a whole-file pass
ALLOW_FLAG = "--config.allow_data_change=True"


def sample_spans(size: int) -> list[tuple[int, int]]:
    """(offset, length) of the bytes `sample_sha256` covers: all of a file up to FULL_BYTES,
    else SAMPLE_BLOCKS even-aligned blocks, the first at byte 0 and the last ending at the end."""
    if size <= FULL_BYTES:
        return [(0, size)]
    last = size - BLOCK_BYTES
    return [((i * last // (SAMPLE_BLOCKS - 1)) & ~1, BLOCK_BYTES) for i in range(SAMPLE_BLOCKS)]


class _Pass:
    """Digest and token range of the bytes read so far."""

    def __init__(self, prefix: bytes, limit: int | None):
        self.hash, self.limit = hashlib.sha256(prefix), limit
        self.max_token, self.first_bad = -1, None  # first_bad: (position, token) >= limit

    def update(self, offset: int, chunk: bytes) -> None:
        self.hash.update(chunk)
        tokens = np.frombuffer(chunk, TOKEN_DTYPE, count=len(chunk) // 2)
        if not tokens.size:
            return
        self.max_token = max(self.max_token, int(tokens.max()))
        if self.limit is not None and self.first_bad is None and self.max_token >= self.limit:
            index = int(np.argmax(tokens >= self.limit))
            self.first_bad = (offset // 2 + index, int(tokens[index]))


def _read(path: str, spans: list[tuple[int, int]], state: _Pass) -> _Pass:
    with open(path, "rb") as f:
        for offset, length in spans:
            f.seek(offset)
            done = 0
            while done < length:
                chunk = f.read(min(CHUNK_BYTES, length - done))
                if not chunk:
                    break
                state.update(offset + done, chunk)
                done += len(chunk)
    return state


def read_sample(path: str, limit: int | None = None) -> _Pass:
    """`sample_sha256` of the file (as `.hash`) with the range of the tokens it covers."""
    size = os.path.getsize(path)
    return _read(path, sample_spans(size), _Pass(f"{size}:".encode(), limit))


def read_whole(path: str, limit: int | None = None) -> _Pass:
    """sha256 of the whole file (as `.hash`) with the range of all its tokens."""
    return _read(path, [(0, os.path.getsize(path))], _Pass(b"", limit))


def describe_file(path: str) -> dict[str, Any]:
    """What prepare records about a finished token file (one or two reads of it)."""
    whole = read_whole(path)
    return {"sha256": whole.hash.hexdigest(), "sample_sha256": read_sample(path).hash.hexdigest(),
            "max_token": whole.max_token}


def _changes(fingerprint: dict[str, Any], meta: dict[str, Any],
             saved: tuple[int, dict] | None) -> list[str]:
    changed = []
    for split in SPLITS:
        now, recorded = fingerprint[split], meta[split].get("sample_sha256")
        before = saved[1].get(split) if saved and isinstance(saved[1], dict) else None
        if isinstance(before, dict) and before != now:
            changed.append(f"{split}.bin changed since checkpoint {saved[0]} was saved")
        elif recorded is not None and recorded != now["sample_sha256"]:
            changed.append(f"{split}.bin is not what prepare wrote (its sampled digest differs "
                           "from meta.json's)")
    return changed


def changed_since(saved: dict | None, fingerprint: dict[str, Any]) -> list[str]:
    """The token files whose fingerprint differs from `saved` (a checkpoint's; None: not known)."""
    if not isinstance(saved, dict):
        return []
    return [f"{s}.bin" for s in SPLITS
            if isinstance(saved.get(s), dict) and saved[s] != fingerprint.get(s)]


def check_data(data_dir: str, vocab_size: int, *, saved: tuple[int, dict] | None = None,
               allow_change: bool = False) -> tuple[dict[str, Any], list[str]]:
    """Checks `data_dir` for a model of `vocab_size` (see the module docstring): returns its
    fingerprint ({split: {bytes, sample_sha256}}) and, when `allow_change` lets a changed content
    through, the line saying what changed. `saved`: (step, fingerprint) of the checkpoint the run
    resumes from. Raises one DataError line naming every problem and the fix."""
    meta = load_meta(data_dir)  # sizes: missing, odd, empty, not meta.json's
    redo = f"`{prepare_command(data_dir, meta.get('dataset'), force=True)}`"
    fingerprint: dict[str, Any] = {}
    problems, wider = [], []
    for split in SPLITS:
        path = os.path.join(data_dir, f"{split}.bin")
        sample = read_sample(path, vocab_size)
        digest = sample.hash.hexdigest()
        fingerprint[split] = {"bytes": os.path.getsize(path), "sample_sha256": digest}
        recorded = meta[split].get("max_token")
        unchanged = meta[split].get("sample_sha256") == digest
        if sample.first_bad is None and os.path.getsize(path) > FULL_BYTES and not (
                unchanged and isinstance(recorded, int) and recorded < vocab_size):
            sample = read_whole(path, vocab_size)  # no exact range on record: scan it
        if sample.first_bad is not None:
            position, token = sample.first_bad
            problems.append(f"{split}.bin holds token {token} at position {position:,}, not below "
                            f"the model's vocab_size {vocab_size}")
            if unchanged and isinstance(recorded, int) and recorded >= vocab_size:
                wider.append(recorded)
    if problems:
        fix = (f"the data was prepared for a larger vocabulary: set --config.vocab_size="
               f"{max(wider) + 1} or more" if len(wider) == len(problems) else
               f"the file is damaged: prepare it again with {redo}")
        raise DataError(f"bad data in {data_dir}: {'; '.join(problems)}; {fix}")
    changed = _changes(fingerprint, meta, saved)
    if not changed:
        return fingerprint, []
    what = f"data in {data_dir} changed: {'; '.join(changed)}"
    if allow_change:
        return fingerprint, [f"warning: {what}; going on as allow_data_change=True says"]
    if saved is not None and changed_since(saved[1], fingerprint):
        fix = (f"point data_dir at the data the run was trained on, or set {ALLOW_FLAG} to "
               "continue on the data as it is now")
    else:
        fix = f"prepare it again with {redo}, or set {ALLOW_FLAG} to train on it as it is"
    raise DataError(f"{what}; {fix}")
