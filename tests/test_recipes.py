"""The modern recipe's versions as the configs apply them: v2 (configs/recipes/modern.py) is v1
(configs/recipes/modern_v1.py) plus the options its ablations kept, and the quick start
(configs/demo.py) trains with it."""

from __future__ import annotations

import math

from minillm_jax.config import exec_python_file, load_config
from minillm_jax.train.metrics import read_metrics
from minillm_jax.train.trainer import train
from tests.conftest import REPO

RECIPES = REPO / "configs" / "recipes"


def _options(name: str) -> dict:
    return exec_python_file(RECIPES / f"{name}.py", "config").OPTIONS


def test_v2_is_v1_plus_options_that_are_off_by_default():
    v1, v2 = _options("modern_v1"), _options("modern")
    base = load_config(REPO / "configs" / "base.py")
    assert {k: v2[k] for k in v1} == v1
    added = {k: v for k, v in v2.items() if k not in v1}
    assert added and all(base[k] != v for k, v in added.items())
    for config in ("demo.py", "proxy_modern.py", "modern.py"):
        loaded = load_config(REPO / "configs" / config)
        # the window is a quarter of the sequence: 32 of the CPU configs' 128 tokens
        expected = dict(v2, attention_window=loaded.sequence_length // 4)
        assert {k: loaded[k] for k in v2} == expected, config
    for config in ("demo_v1.py", "proxy_modern_v1.py"):
        loaded = load_config(REPO / "configs" / config)
        assert all(loaded[k] == base[k] for k in added), config


def test_demo_trains_30_steps_with_v2(tmp_path, shakespeare_dir):
    config = load_config(REPO / "configs" / "demo.py")
    config.update(dict(iterations=30, eval_freq=30, eval_batches=4, final_full_eval=False,
                       sample_tokens=0, log_freq=1, save_every_minutes=0.0,
                       data_dir=shakespeare_dir, workdir=str(tmp_path / "demo")))
    result = train(config)
    losses = [r["train_loss"] for r in read_metrics(str(tmp_path / "demo")) if "train_loss" in r]
    assert result["steps_run"] == 30 and all(math.isfinite(x) for x in losses)
    # the first step scores about ln(50304) = 10.8 (an untrained model); 30 steps get below 7
    assert losses[0] > 10.0 and result["val_loss"] < 7.0, (losses[0], result["val_loss"])
