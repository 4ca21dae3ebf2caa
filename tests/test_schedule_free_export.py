"""Checkpoints of schedule-free runs load (for export/eval) with the evaluation parameters."""

import jax
import numpy as np

from minillm_jax.checkpointing import load_params, restore_params
from minillm_jax.trainer import train
from tests.conftest import tiny_config


def test_load_params_of_sfadamw_run_are_eval_params(tmp_path, shakespeare_dir):
    config = tiny_config(data_dir=shakespeare_dir, workdir=str(tmp_path / "sf"), opt="sfadamw",
                         iterations=4, eval_freq=100, scheduler="constant")
    train(config)
    _, loaded, step = load_params(config.workdir)
    raw_leaves = jax.tree.leaves(restore_params(config.workdir, step, jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), loaded)))
    assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(loaded), raw_leaves))
