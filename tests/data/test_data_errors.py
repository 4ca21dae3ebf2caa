"""Bad input: each problem gives one clear DataError (or is skipped and counted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from tests.data.data_helpers import write_jsonl, write_parquet, write_tokens

from minillm_jax.data import DataError, TrainLoader, iter_val_batches, load_meta
from minillm_jax.data import prepare as prep
from minillm_jax.data.tokenizer import EOT_TOKEN


def _run(tmp_path, source, name="out", **kw):
    out = str(tmp_path / name)
    return out, prep.prepare_dataset(kw.pop("dataset", "text"), out, source=str(source),
                                     progress=False, **kw)


def _write(path, data: bytes):
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def test_empty_documents_skipped_and_counted(tmp_path):
    source = write_jsonl(tmp_path / "d.jsonl", ["a doc", "", "   \n", "b doc", "c doc"])
    out, meta = _run(tmp_path, source, val_fraction=0.2)
    assert meta["skipped"]["empty_documents"] == 2
    assert meta["train"]["documents"] + meta["val"]["documents"] == 3
    tokens = np.fromfile(os.path.join(out, "train.bin"), np.uint16)
    assert not np.any((tokens[1:] == EOT_TOKEN) & (tokens[:-1] == EOT_TOKEN))  # no lone EOTs
    assert tokens[0] != EOT_TOKEN


def test_undecodable_bytes_replaced_and_counted(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _write(src / "a.txt", b"good text \xff\xfe bad bytes")
    _write(src / "b.txt", "fine ✓".encode())
    line = b'{"text": "caf\xe9 latin-1"}\n'  # invalid UTF-8 inside a JSON line
    _write(src / "c.jsonl", line + b'{"text": "lone \\ud800 surrogate"}\n{"text": "ok"}\n')
    _, meta = _run(tmp_path, src, val_fraction=0.2)
    assert meta["skipped"]["replaced_documents"] == 3
    assert meta["train"]["documents"] + meta["val"]["documents"] == 5


def test_malformed_json_names_file_and_line(tmp_path):
    path = _write(tmp_path / "bad.jsonl",
                  b'{"text": "one"}\n\n{"text": "two"}\n{"text": broken\n{"text": "four"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:4: malformed JSON .*--skip-bad"):
        _run(tmp_path, path)
    assert not os.path.exists(tmp_path / "out" / "meta.json")
    out, meta = _run(tmp_path, path, name="skip", skip_bad=True, val_fraction=0.3)
    assert meta["skipped"]["bad_records"] == 1
    assert meta["train"]["documents"] + meta["val"]["documents"] == 3


def test_missing_text_field_and_non_object(tmp_path):
    path = _write(tmp_path / "f.jsonl", b'{"text": "ok"}\n{"content": "no text"}\n')
    with pytest.raises(DataError, match=r"f\.jsonl:2: malformed record \(no string 'text' field\)"):
        _run(tmp_path, path)
    path = _write(tmp_path / "g.jsonl", b'{"text": "ok"}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"g\.jsonl:2: malformed record \(not a JSON object\)"):
        _run(tmp_path, path)
    pq = write_parquet(tmp_path / "p.parquet", ["a", "b"])
    with pytest.raises(DataError, match=r"no 'body' column"):
        _run(tmp_path, pq, text_field="body")


def test_corrupt_zst(tmp_path):
    path = _write(tmp_path / "c.jsonl.zst", b"this is not zstd data at all")
    with pytest.raises(DataError, match=r"c\.jsonl\.zst"):
        _run(tmp_path, path)


def test_token_ids_must_fit_uint16(tmp_path, monkeypatch):
    class Huge:
        name, n_vocab = "huge", 100_000

        def encode_ordinary(self, text):
            return [70_000]

    monkeypatch.setattr(prep, "get_tokenizer", lambda name="gpt2": Huge())
    source = write_jsonl(tmp_path / "d.jsonl", ["a", "b"])
    with pytest.raises(DataError, match="token id 70000 .* does not fit in uint16"):
        _run(tmp_path, source)
    assert not os.path.exists(tmp_path / "out" / "train.bin")


def test_empty_sources_are_errors(tmp_path):
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match="has no .* files"):
        _run(tmp_path, tmp_path / "empty_dir")
    with pytest.raises(DataError, match="matches no files"):
        _run(tmp_path, tmp_path / "nothing*.jsonl")
    with pytest.raises(DataError, match="holds no documents"):
        _run(tmp_path, _write(tmp_path / "e.jsonl", b"\n\n"))
    with pytest.raises(DataError, match="holds no non-empty documents"):
        _run(tmp_path, write_jsonl(tmp_path / "blank.jsonl", ["", " ", "\n"]))
    with pytest.raises(DataError, match="only 1 document"):
        _run(tmp_path, write_jsonl(tmp_path / "one.jsonl", ["just one"]))
    with pytest.raises(DataError, match="unsupported source file"):
        _run(tmp_path, _write(tmp_path / "x.csv", b"a,b\n"))


def test_bad_options(tmp_path):
    with pytest.raises(DataError, match="needs --source"):
        prep.prepare_dataset("text", str(tmp_path / "o"))
    with pytest.raises(DataError, match="val_fraction"):
        prep.prepare_dataset("shakespeare", str(tmp_path / "o"), val_fraction=1.5)
    with pytest.raises(DataError, match="unknown dataset"):
        prep.prepare_dataset("openwebtext", str(tmp_path / "o"))


def test_cli_prints_one_line_without_traceback(tmp_path):
    path = _write(tmp_path / "bad.jsonl", b'{"text": "one"}\nnot json\n')
    proc = subprocess.run([sys.executable, "-m", "minillm_jax.data.prepare", "--dataset", "text",
                           "--source", path, "--out", str(tmp_path / "o"), "--no-progress"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith(f"error: {path}:2: malformed JSON")


def test_loader_errors(tmp_path):
    missing = str(tmp_path / "missing")
    with pytest.raises(DataError, match=rf"no prepared data in {missing}.*python -m minillm_jax"):
        load_meta(missing)
    with pytest.raises(DataError, match="no prepared data"):
        TrainLoader(missing, batch_size=2, seq_len=4, seed=0)
    small = write_tokens(str(tmp_path / "small"), np.arange(100), np.arange(10))
    with pytest.raises(DataError, match="seq_len 200 is longer than the training data"):
        TrainLoader(small, batch_size=1, seq_len=200, seed=0)
    with pytest.raises(DataError, match="fewer than one batch"):
        TrainLoader(small, batch_size=64, seq_len=8, seed=0)
    with pytest.raises(DataError, match="not divisible by process_count 3"):
        TrainLoader(small, batch_size=4, seq_len=4, seed=0, process_count=3)
    with pytest.raises(DataError, match="seq_len 20 is longer than the validation data"):
        iter_val_batches(small, batch_size=1, seq_len=20)
    with pytest.raises(DataError, match="unknown loader mode"):
        TrainLoader(small, batch_size=2, seq_len=4, seed=0, mode="shuffle")
    with open(os.path.join(small, "meta.json"), "w") as f:
        json.dump({"train": {"tokens": 99}, "val": {"tokens": 10}}, f)
    with pytest.raises(DataError, match="train.bin has 100 tokens but meta.json says 99"):
        TrainLoader(small, batch_size=2, seq_len=4, seed=0)
