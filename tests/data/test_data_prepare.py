"""prepare: exact tokens and EOTs for every source format, the split, atomic output, shakespeare."""

from __future__ import annotations

import json
import math
import os
import tarfile

import numpy as np
import pytest
from tests.data.data_helpers import write_jsonl, write_parquet, write_tokens, write_txt_dir

from minillm_jax.data import DataError, ensure_dataset, is_prepared, load_meta
from minillm_jax.data import prepare as prep
from minillm_jax.data.tokenizer import EOT_TOKEN, GPT2_TIKTOKEN_SHA256, get_tokenizer


def _read(directory, split):
    return np.fromfile(os.path.join(directory, f"{split}.bin"), dtype=np.uint16)


def _expected(docs, val_fraction=0.0005, seed=2357):
    """train in source order, val in permutation order (datasets.train_test_split semantics)."""
    enc = get_tokenizer()
    n = len(docs)
    n_val = min(max(1, math.ceil(val_fraction * n)), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    val_idx = [int(i) for i in perm[:n_val]]
    train_idx = [i for i in range(n) if i not in val_idx]

    def stream(idx):
        out = []
        for i in idx:
            out += enc.encode_ordinary(docs[i]) + [EOT_TOKEN]
        return np.array(out, np.uint16)
    return stream(train_idx), stream(val_idx), train_idx, val_idx


def _prepare(tmp_path, name, source, **kw):
    out = str(tmp_path / name)
    kw.setdefault("progress", False)
    prep.prepare_dataset(kw.pop("dataset", "slimpajama"), out, source=source, **kw)
    return out


def test_every_format_exact_tokens_and_meta(tmp_path, corpus):
    docs, sets = corpus
    src = tmp_path / "src"
    src.mkdir()
    sources = {
        "parquet": write_parquet(src / "a.parquet", docs, sets),
        "jsonl": write_jsonl(src / "a.jsonl", docs, sets),
        "zst": write_jsonl(src / "a.jsonl.zst", docs, sets, compress=True),
        "txt": write_txt_dir(tmp_path / "txt", docs),
    }
    train, val, train_idx, val_idx = _expected(docs)
    assert len(val_idx) == 1  # few documents: at least one val document
    for name, source in sources.items():
        out = _prepare(tmp_path, name, source)
        np.testing.assert_array_equal(_read(out, "train"), train, err_msg=name)
        np.testing.assert_array_equal(_read(out, "val"), val, err_msg=name)
        meta = load_meta(out)
        assert meta["train"]["tokens"] == train.size and meta["val"]["tokens"] == val.size
        assert meta["train"]["documents"] == len(train_idx) and meta["val"]["documents"] == 1
        assert int((_read(out, "train") == EOT_TOKEN).sum()) == len(train_idx)
        assert meta["train"]["bytes"] == sum(len(docs[i].encode()) for i in train_idx)
        assert meta["val"]["bytes"] == sum(len(docs[i].encode()) for i in val_idx)
        assert meta["tokenizer"]["name"] == "gpt2"
        assert meta["tokenizer"]["rank_file_sha256"] == GPT2_TIKTOKEN_SHA256
        assert meta["split"]["split_seed"] == 2357
        if name != "txt":  # per-source counts from meta.redpajama_set_name
            by_set = meta["train"]["sources"]
            assert sum(v["documents"] for v in by_set.values()) == len(train_idx)
            assert by_set["RedPajamaC4"]["documents"] == sum(
                sets[i] == "RedPajamaC4" for i in train_idx)
            assert sum(v["tokens"] for v in by_set.values()) == train.size
        else:
            assert set(meta["train"]["sources"]) == {"unknown"}
    # each document decodes back to itself, EOT-terminated
    enc = get_tokenizer()
    stream = _read(out, "train").tolist()
    ends = [i for i, t in enumerate(stream) if t == EOT_TOKEN]
    assert enc.decode(stream[:ends[0]]) == docs[train_idx[0]]


def test_split_reproducible_and_seeded(tmp_path):
    docs = [f"document number {i} " * (i % 5 + 1) for i in range(200)]
    source = write_jsonl(tmp_path / "d.jsonl", docs)
    a = _prepare(tmp_path, "a", source, val_fraction=0.05)
    b = _prepare(tmp_path, "b", source, val_fraction=0.05)
    c = _prepare(tmp_path, "c", source, val_fraction=0.05, split_seed=1)
    train, val, _, val_idx = _expected(docs, 0.05)
    assert len(val_idx) == 10
    for split in ("train", "val"):
        np.testing.assert_array_equal(_read(a, split), _read(b, split))
    np.testing.assert_array_equal(_read(a, "val"), val)
    np.testing.assert_array_equal(_read(a, "train"), train)
    assert not np.array_equal(_read(a, "val"), _read(c, "val"))
    assert load_meta(c)["split"]["split_seed"] == 1


def test_process_pool_matches_inline(tmp_path):
    docs = [f"pool document {i} " * (i % 7 + 1) for i in range(60)]
    source = write_jsonl(tmp_path / "d.jsonl", docs)
    a = _prepare(tmp_path, "inline", source, num_proc=1, group_chars=200, val_fraction=0.1)
    b = _prepare(tmp_path, "pool", source, num_proc=2, group_chars=200, val_fraction=0.1)
    for split in ("train", "val"):
        np.testing.assert_array_equal(_read(a, split), _read(b, split))
    assert load_meta(b)["prepare"]["num_proc"] == 2


def test_interrupted_prepare_leaves_nothing_finished(tmp_path, monkeypatch):
    docs = [f"doc {i} text " * 20 for i in range(30)]
    source = write_jsonl(tmp_path / "d.jsonl", docs)
    clean = _prepare(tmp_path, "clean", source, group_chars=100)
    out = str(tmp_path / "out")
    real, calls = prep._encode_group, []

    def flaky(texts):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as if Ctrl-C arrived mid-way
        return real(texts)

    monkeypatch.setattr(prep, "_encode_group", flaky)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare_dataset("text", out, source=source, progress=False, group_chars=100)
    assert not is_prepared(out)
    assert sorted(os.listdir(out)) == [".prepare.lock"]  # no finished-looking files, no temporaries
    monkeypatch.setattr(prep, "_encode_group", real)
    # a stale temporary from a killed run is removed, the redo is complete and not appended twice
    open(os.path.join(out, ".train.bin.tmp-99999"), "wb").write(b"junk")
    prep.prepare_dataset("text", out, source=source, progress=False, group_chars=100)
    for split in ("train", "val"):
        np.testing.assert_array_equal(_read(out, split), _read(clean, split))
    assert ".train.bin.tmp-99999" not in os.listdir(out)

    # redoing a finished directory with --force and failing leaves no finished-looking output
    monkeypatch.setattr(prep, "_encode_group", lambda texts: (_ for _ in ()).throw(RuntimeError("x")))
    with pytest.raises(RuntimeError):
        prep.prepare_dataset("text", out, source=source, progress=False, force=True)
    assert not is_prepared(out) and not os.path.exists(os.path.join(out, "meta.json"))


def test_finished_directory_is_left_alone(tmp_path, monkeypatch):
    source = write_jsonl(tmp_path / "d.jsonl", ["one doc", "two doc", "three doc"])
    out = _prepare(tmp_path, "out", source)
    stamp = os.stat(os.path.join(out, "train.bin")).st_mtime_ns
    monkeypatch.setattr(prep, "_encode_group", None)  # would fail if called
    prep.prepare_dataset("slimpajama", out, source=source, progress=False)
    assert os.stat(os.path.join(out, "train.bin")).st_mtime_ns == stamp
    # a truncated token file makes the directory unfinished
    with open(os.path.join(out, "train.bin"), "r+b") as f:
        f.truncate(2)
    assert not is_prepared(out)
    with pytest.raises(DataError, match="train.bin has 1 tokens but meta.json says 6 .*--force"):
        load_meta(out)


def test_shakespeare_prepare_and_ensure(shakespeare_dir, tmp_path):
    meta = load_meta(shakespeare_dir)
    with tarfile.open(prep.ShakespeareSource().path, "r:xz") as tar:
        sizes = {m.name: m.size for m in tar if m.name.endswith(".txt")}
    assert meta["train"]["documents"] + meta["val"]["documents"] == len(sizes) == 42
    assert meta["val"]["documents"] == 3  # ceil(0.05 * 42) whole plays
    assert meta["train"]["bytes"] + meta["val"]["bytes"] == sum(sizes.values())
    for split in ("train", "val"):
        tokens = _read(shakespeare_dir, split)
        assert tokens.size == meta[split]["tokens"]
        assert int((tokens == EOT_TOKEN).sum()) == meta[split]["documents"]
        assert tokens[-1] == EOT_TOKEN
        assert 2.5 < meta[split]["bytes"] / meta[split]["tokens"] < 4.5
    ensure_dataset("shakespeare", shakespeare_dir)  # already there: no-op
    with pytest.raises(DataError, match=r"no prepared data in .*--dataset slimpajama --out"):
        ensure_dataset("slimpajama", str(tmp_path / "nothing"))


def test_shakespeare_dev_never_sees_the_validation_plays(shakespeare_dir, tmp_path):
    """For choosing hyper-parameters: the training plays only, split again into train and dev."""
    dev = str(tmp_path / "dev")
    ensure_dataset("shakespeare-dev", dev)
    meta, full = load_meta(dev), load_meta(shakespeare_dir)
    assert meta["train"]["documents"] == 37 and meta["val"]["documents"] == 2
    assert meta["train"]["tokens"] + meta["val"]["tokens"] == full["train"]["tokens"]
    held_out = _read(shakespeare_dir, "val")
    plays = np.split(held_out, np.flatnonzero(held_out == EOT_TOKEN)[:-1] + 1)
    for split in ("train", "val"):
        tokens = _read(dev, split).tobytes()
        for play in plays:
            assert play[100:400].tobytes() not in tokens  # no validation text leaks in


def test_cli_ok_and_error(tmp_path, capsys):
    source = write_jsonl(tmp_path / "d.jsonl", ["alpha beta", "gamma delta", "epsilon"])
    out = str(tmp_path / "out")
    assert prep.main(["--dataset", "text", "--source", source, "--out", out]) == 0
    err = capsys.readouterr().err
    assert "MB/s" in err and "docs" in err
    assert json.load(open(os.path.join(out, "meta.json")))["dataset"] == "text"
    assert prep.main(["--dataset", "text", "--source", str(tmp_path / "none*.jsonl"),
                      "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_hub_path_without_datasets(tmp_path, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(DataError, match=r"minillm-jax\[data\].*--source"):
        prep.prepare_dataset("slimpajama", str(tmp_path / "o"), progress=False)


def test_hub_path_offline_and_fake(tmp_path, monkeypatch, corpus):
    import sys
    import types

    docs, sets = corpus

    class FakeDataset:  # the few `datasets.Dataset` methods the hub path uses
        def __init__(self, rows):
            self.rows = rows

        def __len__(self):
            return len(self.rows)

        def train_test_split(self, test_size, seed, shuffle):
            n = len(self.rows)
            perm = np.random.default_rng(seed).permutation(n)
            n_test = math.ceil(test_size * n)
            return {"train": FakeDataset([self.rows[i] for i in perm[n_test:]]),
                    "test": FakeDataset([self.rows[i] for i in perm[:n_test]])}

        def iter(self, batch_size):
            for i in range(0, len(self.rows), batch_size):
                chunk = self.rows[i:i + batch_size]
                yield {k: [r[k] for r in chunk] for k in ("text", "meta")}

    fake = types.ModuleType("datasets")
    fake.__version__ = "fake"

    def offline(name, **kw):
        raise ConnectionError("Couldn't reach 'DKYoon/SlimPajama-6B' on the Hub (LocalEntryNotFoundError)")
    fake.load_dataset = offline
    monkeypatch.setitem(sys.modules, "datasets", fake)
    with pytest.raises(DataError, match=r"could not load DKYoon/SlimPajama-6B.*ConnectionError"):
        prep.prepare_dataset("slimpajama", str(tmp_path / "o"), progress=False)

    rows = [{"text": d, "meta": {"redpajama_set_name": s}} for d, s in zip(docs, sets)]
    fake.load_dataset = lambda name, **kw: {"train": FakeDataset(rows)}
    out = str(tmp_path / "hub")
    meta = prep.prepare_dataset("slimpajama", out, progress=False, val_fraction=0.25)
    local = _prepare(tmp_path, "local", write_parquet(tmp_path / "d.parquet", docs, sets),
                     val_fraction=0.25)
    # same val documents in the same order as the local path; train holds the same documents
    np.testing.assert_array_equal(_read(out, "val"), _read(local, "val"))
    assert meta["train"]["tokens"] == load_meta(local)["train"]["tokens"]
    assert sorted(_read(out, "train").tolist()) == sorted(_read(local, "train").tolist())
    assert "hub DKYoon/SlimPajama-6B" in meta["source"]


def test_write_tokens_helper_is_a_valid_dataset(tmp_path):
    out = write_tokens(str(tmp_path / "t"), np.arange(10), np.arange(5))
    assert is_prepared(out) and load_meta(out)["train"]["tokens"] == 10
