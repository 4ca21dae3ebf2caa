"""Checkpoints of schedule-free runs load (for export/eval) with the evaluation parameters."""

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from minillm_jax.train.checkpointing import load_params, restore_params
from minillm_jax.train.rundir import checkpoint_dir
from minillm_jax.train.trainer import train
from tests.conftest import tiny_config


def test_load_params_of_sfadamw_run_are_eval_params(tmp_path, shakespeare_dir):
    """load_params gives schedule-free's averaged x = (y - (1 - b1) z) / b1, computed here from
    the raw checkpoint items (y: params, z and b1: the optimizer state, read as plain arrays)."""
    config = tiny_config(data_dir=shakespeare_dir, workdir=str(tmp_path / "sf"), opt="sfadamw",
                         iterations=4, eval_freq=100, scheduler="constant")
    train(config)
    _, loaded, step = load_params(config.workdir)
    y = restore_params(config.workdir, step, jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), loaded))
    # the optimizer state as saved, without the optimizer's structure: a dict of arrays
    with ocp.StandardCheckpointer() as reader:
        opt_state = reader.restore(f"{checkpoint_dir(config.workdir)}/{step}/opt_state")
    (node,) = [n for n in jax.tree.leaves(opt_state, is_leaf=lambda n: isinstance(n, dict)
                                          and "z" in n and "b1" in n)]
    b1 = float(np.asarray(node["b1"]))
    assert b1 == pytest.approx(config.beta1, rel=1e-7)  # stored as float32
    flat_y = {jax.tree_util.keystr(k): np.asarray(v)
              for k, v in jax.tree_util.tree_flatten_with_path(y)[0]}
    flat_z = {jax.tree_util.keystr(k): np.asarray(v)
              for k, v in jax.tree_util.tree_flatten_with_path(node["z"])[0]}
    flat_loaded = {jax.tree_util.keystr(k): np.asarray(v)
                   for k, v in jax.tree_util.tree_flatten_with_path(loaded)[0]}
    assert set(flat_loaded) == set(flat_y) == set(flat_z)
    differs = 0
    for key, x in flat_loaded.items():
        expected = (flat_y[key].astype(np.float64) - (1.0 - b1) * flat_z[key]) / b1
        np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-7, err_msg=key)
        differs += not np.allclose(x, flat_y[key])
    assert differs > 0  # the average is not the iterate y
