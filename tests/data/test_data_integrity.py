"""Damaged, changed and partial data directories: each refused with one line naming the file and
the fix (minillm_jax/data/integrity.py, format.py)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
from tests.data.data_helpers import write_jsonl, write_tokens

from minillm_jax.data import DataError, TrainLoader, check_data, ensure_dataset, load_meta
from minillm_jax.data import integrity
from minillm_jax.data import prepare as prep

VOCAB = 50304


def _copy(src: str, tmp_path, name: str = "d") -> str:
    out = str(tmp_path / name)
    shutil.copytree(src, out)
    return out


def _poke(data_dir: str, split: str, position: int, value: int) -> None:
    tokens = np.memmap(os.path.join(data_dir, f"{split}.bin"), np.uint16, mode="r+")
    tokens[position] = value
    tokens.flush()


def _truncate(data_dir: str, split: str, nbytes: int) -> None:
    path = os.path.join(data_dir, f"{split}.bin")
    os.truncate(path, os.path.getsize(path) - nbytes)


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_prepare_records_what_the_checks_compare(shakespeare_dir):
    meta = load_meta(shakespeare_dir)
    for split in ("train", "val"):
        raw = open(os.path.join(shakespeare_dir, f"{split}.bin"), "rb").read()
        assert meta[split]["sha256"] == hashlib.sha256(raw).hexdigest()  # `sha256sum` agrees
        assert meta[split]["max_token"] == int(np.frombuffer(raw, np.uint16).max()) == 50256
        # a file under FULL_BYTES is covered whole: the digest of its size and every byte
        assert meta[split]["sample_sha256"] == hashlib.sha256(
            f"{len(raw)}:".encode() + raw).hexdigest()
    fingerprint, notes = check_data(shakespeare_dir, VOCAB)
    assert notes == [] and fingerprint["train"]["sample_sha256"] == meta["train"]["sample_sha256"]


@pytest.mark.parametrize("damage, expected", [
    (lambda d: _truncate(d, "train", 1), r"train\.bin has 2,955,971 bytes, an odd count"),
    (lambda d: _truncate(d, "val", 1), r"val\.bin has 176,029 bytes, an odd count"),
    (lambda d: _truncate(d, "val", 2), r"val\.bin has 88,014 tokens but meta\.json says 88,015"),
    (lambda d: open(os.path.join(d, "val.bin"), "wb").close(), r"val\.bin is empty"),
    (lambda d: open(os.path.join(d, "train.bin"), "wb").close(), r"train\.bin is empty"),
    (lambda d: _poke(d, "val", 1234, 65000),
     r"val\.bin holds token 65000 at position 1,234, not below the model's vocab_size 50304"),
    (lambda d: _poke(d, "train", 777_777, 50304), r"train\.bin holds token 50304 at position 777,777"),
])
def test_damage_is_one_line_naming_file_and_fix(shakespeare_dir, tmp_path, damage, expected):
    data_dir = _copy(shakespeare_dir, tmp_path)
    damage(data_dir)
    with pytest.raises(DataError, match=expected) as err:
        check_data(data_dir, VOCAB)
    assert _one_line(err).endswith(f"--out {data_dir} --force`")
    # the trainer's entry for a vendored corpus never re-prepares over a damaged directory
    files = {name: open(os.path.join(data_dir, name), "rb").read() for name in os.listdir(data_dir)}
    if "holds token" in expected:
        ensure_dataset("shakespeare", data_dir)  # sizes are right: check_data tells
    else:
        with pytest.raises(DataError, match=expected):
            ensure_dataset("shakespeare", data_dir)
    assert files == {name: open(os.path.join(data_dir, name), "rb").read() for name in files}


def test_every_damaged_file_at_once(shakespeare_dir, tmp_path):
    data_dir = _copy(shakespeare_dir, tmp_path)
    _truncate(data_dir, "train", 1)
    open(os.path.join(data_dir, "val.bin"), "wb").close()
    with pytest.raises(DataError, match=r"train\.bin has .* odd count.*; val\.bin is empty"):
        check_data(data_dir, VOCAB)


def test_tokens_of_a_larger_vocabulary_say_which_vocab_size(tmp_path):
    source = write_jsonl(tmp_path / "d.jsonl", ["some text", "more text here", "and a third"])
    out = str(tmp_path / "out")
    prep.prepare_dataset("text", out, source=source, val_fraction=0.4, progress=False)
    top = max(int(np.fromfile(os.path.join(out, f"{s}.bin"), np.uint16).max())
              for s in ("train", "val"))
    with pytest.raises(DataError, match=rf"larger vocabulary: set --config.vocab_size={top + 1}"):
        check_data(out, 1000)


@pytest.fixture
def sampled(monkeypatch, tmp_path):
    """A 40 kB directory read through 8 blocks of 256 bytes, as a many-GB train.bin is."""
    monkeypatch.setattr(integrity, "FULL_BYTES", 4096)
    monkeypatch.setattr(integrity, "BLOCK_BYTES", 256)
    monkeypatch.setattr(integrity, "SAMPLE_BLOCKS", 8)
    data_dir = write_tokens(str(tmp_path / "big"), np.arange(20_000) % 50_000, np.arange(3000))
    meta = json.load(open(os.path.join(data_dir, "meta.json")))
    for split in ("train", "val"):
        meta[split].update(integrity.describe_file(os.path.join(data_dir, f"{split}.bin")))
    json.dump(meta, open(os.path.join(data_dir, "meta.json"), "w"))
    return data_dir


def _outside_samples(size: int) -> int:
    """A token position no sampled block covers."""
    covered = np.zeros(size // 2, bool)
    for offset, length in integrity.sample_spans(size):
        covered[offset // 2:(offset + length) // 2] = True
    assert covered[0] and covered[-1] and covered.sum() == 8 * 128
    return int(np.flatnonzero(~covered)[len(np.flatnonzero(~covered)) // 2])


def test_sampled_check_sees_a_shuffle_but_not_one_token_outside_its_blocks(sampled):
    check_data(sampled, VOCAB)
    before = np.fromfile(os.path.join(sampled, "train.bin"), np.uint16)
    # one changed token outside the sampled blocks is the documented blind spot
    _poke(sampled, "train", _outside_samples(before.nbytes), 7)
    assert check_data(sampled, VOCAB)[1] == []
    np.random.default_rng(0).permutation(before).tofile(os.path.join(sampled, "train.bin"))
    with pytest.raises(DataError, match=r"train\.bin is not what prepare wrote .*--force.*`, or "
                       r"set --config\.allow_data_change=True to train on it as it is$"):
        check_data(sampled, VOCAB)
    _, notes = check_data(sampled, VOCAB, allow_change=True)
    assert len(notes) == 1 and notes[0].startswith("warning: ")


def test_without_a_recorded_max_a_large_file_is_scanned_whole(sampled):
    meta = json.load(open(os.path.join(sampled, "meta.json")))
    del meta["train"]["max_token"]  # as an older prepare wrote it
    json.dump(meta, open(os.path.join(sampled, "meta.json"), "w"))
    position = _outside_samples(os.path.getsize(os.path.join(sampled, "train.bin")))
    _poke(sampled, "train", position, 60000)
    with pytest.raises(DataError, match=rf"token 60000 at position {position:,}"):
        check_data(sampled, VOCAB)


def test_changed_since_the_checkpoint(shakespeare_dir, tmp_path):
    data_dir = _copy(shakespeare_dir, tmp_path)
    fingerprint, _ = check_data(data_dir, VOCAB)
    other = {**fingerprint, "val": {**fingerprint["val"], "sample_sha256": "0" * 64}}
    with pytest.raises(DataError, match=r"val\.bin changed since checkpoint 10 was saved; point "
                       r"data_dir at .* set --config\.allow_data_change=True to continue"):
        check_data(data_dir, VOCAB, saved=(10, other))
    assert check_data(data_dir, VOCAB, saved=(10, fingerprint)) == (fingerprint, [])
    assert check_data(data_dir, VOCAB, saved=(10, None))[1] == []  # an older checkpoint
    _, notes = check_data(data_dir, VOCAB, saved=(10, other), allow_change=True)
    assert "val.bin changed since checkpoint 10" in notes[0]


def test_loader_refuses_a_state_saved_on_other_data(shakespeare_dir):
    fingerprint, _ = check_data(shakespeare_dir, VOCAB)
    kw = dict(batch_size=2, seq_len=8, seed=0, prefetch=0, fingerprint=fingerprint)
    with TrainLoader(shakespeare_dir, **kw) as loader:
        next(loader)
        state = loader.get_state()
    assert state["data_fingerprint"] == fingerprint
    other = {**state, "train_tokens": 5, "data_fingerprint": {
        **fingerprint, "train": {"bytes": 10, "sample_sha256": "x"}}}
    with TrainLoader(shakespeare_dir, **kw) as loader, pytest.raises(
            DataError, match=r"train\.bin in .* changed since the checkpoint was saved"):
        loader.set_state(other)
    with TrainLoader(shakespeare_dir, **kw, allow_data_change=True) as loader:
        loader.set_state(other)
        assert loader.next_micro_batch == 1


@pytest.mark.parametrize("leftovers", [[".train.bin.tmp-4242"], ["train.bin", "val.bin"]])
def test_a_partial_prepare_is_never_read_as_data(tmp_path, leftovers):
    data_dir = tmp_path / "partial"
    data_dir.mkdir()
    for name in leftovers:
        np.arange(100, dtype=np.uint16).tofile(data_dir / name)
    expected = (rf"no prepared data in {data_dir} \(an interrupted prepare left unfinished files "
                r"and no meta\.json, which prepare writes last\): rerun `python -m "
                rf"minillm_jax\.data\.prepare --dataset text --out {data_dir}")
    for attempt in (lambda: ensure_dataset("text", str(data_dir)),
                    lambda: TrainLoader(str(data_dir), batch_size=2, seq_len=4, seed=0)):
        with pytest.raises(DataError, match=expected.replace("text", "(text|NAME)")) as err:
            attempt()
        _one_line(err)
