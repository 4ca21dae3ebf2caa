"""The wall-clock budget stops on time with the lr decay finished."""

import pytest

from minillm_jax.train.metrics import read_metrics
from minillm_jax.train.trainer import train
from tests.conftest import tiny_config


def test_thirty_second_budget_stops_on_time_with_decay_done(tmp_path, shakespeare_dir, world):
    """A 30 s budget on the fake clock of tests/conftest.py (0.2 s per training batch; compile
    and data setup take no fake time): the run stops on time, whatever the machine's load, with
    the lr decayed to the end of its schedule."""
    world["step_s"] = 0.2
    config = tiny_config(data_dir=shakespeare_dir, workdir=str(tmp_path / "budget"),
                         iterations=1_000_000, budget_minutes=30 / 60, log_freq=1,
                         eval_freq=1_000_000, loss_chunk_size=0, save_every=0,
                         save_every_minutes=0.0)
    result = train(config)
    assert result["stop_reason"] == "time budget"
    assert 50 < result["steps_run"] < 150
    assert world["now"] <= 30  # the budget includes the final eval and save (fake time)
    lrs = [r["lr"] for r in read_metrics(config.workdir) if "lr" in r]
    min_lr = config.lr / config.div_factor / config.final_div_factor  # OneCycle's end: lr / 10
    assert lrs[-1] <= 1.5 * min_lr  # >= 95% of the way from the peak (10 x min_lr) to the end
    assert max(lrs) == pytest.approx(config.lr, rel=0.05)
