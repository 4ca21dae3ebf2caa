"""Long-run safety of the loop: non-finite steps survived (skip, roll back, stop), time-based
saves and budgeted runs that resume exactly, under a fake clock and injected bad batches."""

from __future__ import annotations

import json
import os

import pytest

from minillm_jax import trainer
from minillm_jax.data import loader as loader_lib
from minillm_jax.metrics import read_metrics
from minillm_jax.trainer import TrainingError, train
from tests.conftest import tiny_config


class Interrupted(Exception):
    """Stands in for a kill -9 between checkpoints."""


@pytest.fixture
def world(monkeypatch):
    """A fake clock that advances `step_s` seconds per training batch, bad micro-batches (an
    out-of-range token id embeds as NaN: a non-finite loss), and an interruption point."""
    state = {"now": 0.0, "step_s": 1.0, "bad": set(), "die_at": None}
    real_next = loader_lib.TrainLoader.__next__

    def fake_next(self):
        micro = self.next_micro_batch
        if state["die_at"] is not None and micro >= state["die_at"]:
            raise Interrupted(micro)
        batch = real_next(self)
        state["now"] += state["step_s"]
        if micro in state["bad"]:
            batch = {**batch, "x": batch["x"].copy()}
            batch["x"][:, 0, 0] = 1_000_000
        return batch

    monkeypatch.setattr(loader_lib.TrainLoader, "__next__", fake_next)
    monkeypatch.setattr(trainer, "clock", lambda: state["now"])
    return state


def _config(shakespeare_dir, workdir, **overrides):
    defaults = dict(log_freq=1, eval_freq=100, save_every_minutes=0.0)
    return tiny_config(data_dir=shakespeare_dir, workdir=str(workdir), **{**defaults, **overrides})


def _data_position(workdir, step):
    path = os.path.join(workdir, "checkpoints", str(step), "data", "metadata")
    return json.load(open(path))["micro_batch"]


def test_non_finite_steps_roll_back_and_skip_the_bad_batches(tmp_path, shakespeare_dir, world,
                                                           capsys):
    world["bad"] = {7, 8}  # steps 8 and 9 see a NaN loss
    config = _config(shakespeare_dir, tmp_path / "run", iterations=20, save_every=5,
                     nonfinite_rollback_after=2)
    result = train(config)
    out = capsys.readouterr().out
    assert "step 8: loss nan" in out and "update skipped" in out
    assert "rolled back to step 5; training continues on the batches after them" in out
    assert result["step"] == 20 and result["val_loss"] < 11
    records = read_metrics(config.workdir)
    assert {"step": 5, "rollback_from_step": 9, "nonfinite_steps": 2} in records
    steps = [r["step"] for r in records if "train_loss" in r]
    assert steps == sorted(steps) and steps[-1] == 20  # the bad stretch was trimmed and redone
    # steps 6..20 ran on micro-batches 10..24: the five after step 5 (two bad) were skipped
    assert _data_position(config.workdir, 20) == 25


def test_non_finite_again_after_rollback_stops_keeping_the_checkpoint(tmp_path, shakespeare_dir,
                                                                     world):
    world["bad"] = set(range(7, 1000))
    config = _config(shakespeare_dir, tmp_path / "run", iterations=30, save_every=5,
                     nonfinite_rollback_after=2)
    with pytest.raises(TrainingError, match="again after rolling back to step 5: stopping; "
                       "checkpoints are kept"):
        train(config)
    assert os.path.isdir(os.path.join(config.workdir, "checkpoints", "5"))


def test_non_finite_without_a_checkpoint_says_so(tmp_path, shakespeare_dir, world):
    world["bad"] = set(range(2, 1000))
    config = _config(shakespeare_dir, tmp_path / "run", iterations=30, nonfinite_rollback_after=3)
    with pytest.raises(TrainingError, match="loss became nan at step 5: 3 steps in a row .* "
                       "no checkpoint to roll back to: stopping"):
        train(config)


def test_time_based_saves(tmp_path, shakespeare_dir, world):
    """save_every_minutes=2.5 with steps of one minute: a checkpoint every third step."""
    world["step_s"] = 60.0
    config = _config(shakespeare_dir, tmp_path / "run", iterations=10, keep=0,
                     save_every_minutes=2.5)
    train(config)
    kept = sorted(int(d) for d in os.listdir(os.path.join(config.workdir, "checkpoints")))
    assert kept == [3, 6, 9, 10]


def test_budgeted_run_killed_and_resumed_equals_the_uninterrupted_one(tmp_path, shakespeare_dir,
                                                                     world):
    """A 30 s budget at one (fake) second per step: the horizon is set from the measured step
    time; the run killed after its step-10 checkpoint resumes with the budget time and horizon
    it saved, and every logged value equals the uninterrupted run's."""
    overrides = dict(iterations=1_000_000, budget_minutes=0.5, save_every=5, eval_freq=6,
                     log_freq=2)
    reference = _config(shakespeare_dir, tmp_path / "reference", **overrides)
    result = train(reference)
    assert result["stop_reason"] == "time budget" and 15 < result["step"] < 30

    world["now"], world["die_at"] = 0.0, 13  # killed while taking step 14
    config = _config(shakespeare_dir, tmp_path / "run", **overrides)
    with pytest.raises(Interrupted):
        train(config)
    world["now"], world["die_at"] = 10.0, None  # the clock as the step-10 checkpoint saw it
    train(config)

    def series(workdir, key):
        return [(r["step"], r[key]) for r in read_metrics(str(workdir)) if key in r]

    for key in ("train_loss", "lr", "val_loss", "final_val_loss"):
        assert series(config.workdir, key) == series(reference.workdir, key), key
    lrs = [lr for _, lr in series(reference.workdir, "lr")]
    assert lrs[-1] <= 1.5 * reference.lr / reference.div_factor / reference.final_div_factor
