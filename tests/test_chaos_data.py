"""Damaged data through the real training CLI, and the prepare CLI killed with SIGKILL then rerun
(minillm_jax/experiments/chaos_data.py), in subprocesses."""

from __future__ import annotations

import json
import os

import pytest

from minillm_jax.data import DataError, load_meta
from minillm_jax.experiments import chaos_data


def test_prepare_killed_mid_way_then_rerun_writes_the_same_bytes(shakespeare_dir, tmp_path):
    out = str(tmp_path / "out")
    killed = chaos_data.kill_prepare(out, "groups", 2)  # after two tokenized groups
    assert killed.returncode == -9
    left = sorted(os.listdir(out))
    assert "meta.json" not in left and any(name.startswith(".train.bin.tmp-") for name in left)
    with pytest.raises(DataError, match=r"interrupted prepare .* rerun `python -m "
                                        r"minillm_jax\.data\.prepare"):
        load_meta(out)
    assert chaos_data.rerun_prepare(out).returncode == 0
    # the same bytes as the fixture's uninterrupted, in-process prepare
    for name in ("train.bin", "val.bin"):
        with open(os.path.join(out, name), "rb") as a, open(
                os.path.join(shakespeare_dir, name), "rb") as b:
            assert a.read() == b.read(), name
    metas = [json.load(open(os.path.join(d, "meta.json"))) for d in (out, shakespeare_dir)]
    for meta in metas:
        meta.pop("prepare")  # timings and date
    assert metas[0] == metas[1]
    assert [n for n in os.listdir(out) if ".tmp-" in n] == []


def test_data_cases_every_row_survives(tmp_path):
    """A subset (about 30 s): one size and one token-range case through the CLI, and the
    prepare kills; the other rows are test_data_checks.py's cases through train()."""
    faults = ["train.bin truncated by one byte", "val.bin token >= vocab_size",
              chaos_data.PREPARE_CASE]
    rows = chaos_data.data_cases(str(tmp_path), seed=3, only=faults)
    assert [r["fault"] for r in rows] == faults
    for r in rows:
        assert set(r) == {"fault", "count", "survived", "equal", "detail"}
        assert r["survived"] == r["count"] >= 1, r
        assert r["detail"].startswith("error: ") and "\n" not in r["detail"], r
    assert [r["equal"] for r in rows] == ["n/a", "n/a", 3]  # 3 reruns, each byte-identical
    assert rows[2]["count"] == 3
    assert "train.bin has" in rows[0]["detail"] and "odd count" in rows[0]["detail"]
    assert "val.bin holds token" in rows[1]["detail"]


def test_refusal_judges_the_output():
    """What counts as refused: exit != 0, no traceback, not compiled, an `error:` line last."""
    import subprocess

    def proc(code: int, out: str = "", err: str = "") -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess([], code, out, err)

    assert chaos_data.refusal(proc(2, "model llama\n", "error: bad data in d\n")) == (
        True, "error: bad data in d")
    assert not chaos_data.refusal(proc(0, "step 2/2\n"))[0]
    assert not chaos_data.refusal(proc(1, "", "Traceback (most recent call last):\nX\n"))[0]
    assert not chaos_data.refusal(proc(2, "compiled train step in 1s\n", "error: late\n"))[0]
    assert not chaos_data.refusal(proc(2, "", "error: x\nmore\n"))[0]
