"""train() refuses damaged or changed data before compiling, with one DataError line; a resume on
data changed since the checkpoint is refused unless config.allow_data_change says otherwise. The
same cases through the real CLI, and prepare killed with SIGKILL, are
minillm_jax/experiments/chaos_data.py (tests/test_chaos_data.py)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from minillm_jax.data import DataError
from minillm_jax.train import trainer
from minillm_jax.train.build import Run
from tests.conftest import tiny_config


class Compiled(Exception):
    """Raised in place of compiling: the check under test came too late."""


@pytest.fixture
def no_compile(monkeypatch):
    def refuse(self):
        raise Compiled

    monkeypatch.setattr(Run, "compile_train_step", refuse)


def _copy(shakespeare_dir: str, tmp_path) -> str:
    out = str(tmp_path / "data")
    shutil.copytree(shakespeare_dir, out)
    return out


def _tokens(data_dir: str, split: str) -> np.memmap:
    return np.memmap(os.path.join(data_dir, f"{split}.bin"), np.uint16, mode="r+")


def _truncate_one_byte(data_dir: str, split: str) -> None:
    path = os.path.join(data_dir, f"{split}.bin")
    os.truncate(path, os.path.getsize(path) - 1)


def _out_of_vocab(data_dir: str, split: str) -> None:
    tokens = _tokens(data_dir, split)
    tokens[tokens.size // 3] = 65000  # above vocab_size 50304, still a uint16
    tokens.flush()


def _empty(data_dir: str, split: str) -> None:
    open(os.path.join(data_dir, f"{split}.bin"), "wb").close()


@pytest.mark.parametrize("damage, split, expected", [
    (_truncate_one_byte, "train", r"train\.bin has .* bytes, an odd count"),
    (_truncate_one_byte, "val", r"val\.bin has .* bytes, an odd count"),
    (_out_of_vocab, "train", r"train\.bin holds token 65000 .* vocab_size 50304"),
    (_out_of_vocab, "val", r"val\.bin holds token 65000 .* vocab_size 50304"),
    (_empty, "val", r"val\.bin is empty"),
    (_empty, "train", r"train\.bin is empty"),
])
def test_damaged_data_is_refused_before_compiling(shakespeare_dir, tmp_path, no_compile, damage,
                                                  split, expected):
    data_dir = _copy(shakespeare_dir, tmp_path)
    damage(data_dir, split)
    config = tiny_config(data_dir=data_dir, workdir=str(tmp_path / "run"), iterations=2)
    with pytest.raises(DataError, match=expected) as err:
        trainer.train(config)
    assert "\n" not in str(err.value) and "prepare it again with `python -m" in str(err.value)


def test_resume_on_changed_data_is_refused_unless_allowed(shakespeare_dir, tmp_path, monkeypatch,
                                                          capsys):
    data_dir = _copy(shakespeare_dir, tmp_path)
    workdir = str(tmp_path / "run")
    first = trainer.train(tiny_config(data_dir=data_dir, workdir=workdir, iterations=4))
    assert first["step"] == 4
    tokens = _tokens(data_dir, "train")  # the same tokens in another order: the same size
    tokens[:] = np.random.default_rng(0).permutation(np.asarray(tokens))
    tokens.flush()
    real_compile = Run.compile_train_step
    monkeypatch.setattr(Run, "compile_train_step", lambda self: (_ for _ in ()).throw(Compiled()))
    with pytest.raises(DataError, match=r"train\.bin changed since checkpoint 4 was saved; .* "
                       r"set --config\.allow_data_change=True to continue") as err:
        trainer.train(tiny_config(data_dir=data_dir, workdir=workdir, iterations=8))
    assert "\n" not in str(err.value)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["4"]  # nothing touched

    monkeypatch.setattr(Run, "compile_train_step", real_compile)
    capsys.readouterr()
    result = trainer.train(tiny_config(data_dir=data_dir, workdir=workdir, iterations=8,
                                       allow_data_change=True))
    assert result["step"] == 8
    notes = capsys.readouterr().out.splitlines()
    assert any(n.startswith("warning: data in") and "allow_data_change=True" in n for n in notes)
    assert f"resumed from {workdir}/checkpoints/4" in notes
