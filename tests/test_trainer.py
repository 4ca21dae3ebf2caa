"""End-to-end training on the built-in corpus: learning, determinism, devices, bad input."""

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest

from minillm_jax.config import ConfigError
from minillm_jax.train.metrics import read_metrics
from minillm_jax.train.trainer import TrainingError, train
from tests.conftest import REPO, tiny_config


def _train_losses(workdir):
    return [r["train_loss"] for r in read_metrics(workdir) if "train_loss" in r]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shakespeare_dir):
    workdir = str(tmp_path_factory.mktemp("run"))
    config = tiny_config(data_dir=shakespeare_dir, workdir=workdir, iterations=40, log_freq=1,
                         eval_freq=20, lr=3e-3, sample_tokens=5)
    return workdir, config, train(config)


def test_loss_decreases_and_run_outputs(trained):
    workdir, _, result = trained
    losses = _train_losses(workdir)
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0
    assert result["val_loss"] < 8.0 and 0 < result["val_acc"] < 1
    assert result["val_perplexity"] == pytest.approx(math.exp(result["val_loss"]), rel=1e-12)
    assert "val_bpb" in result and result["sample"].startswith("Once upon a time")
    records = read_metrics(workdir)
    assert any("val_loss" in r and r["step"] == 20 for r in records)
    assert records[-1]["step"] == 40 and "final_val_loss" in records[-1]
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "40"))


def test_same_seed_same_losses(trained, tmp_path, shakespeare_dir):
    workdir, config, _ = trained
    again = str(tmp_path / "again")
    config = config.copy_and_resolve_references()
    config.workdir = again
    train(config)
    assert _train_losses(again) == _train_losses(workdir)


_MULTI_DEVICE_SCRIPT = textwrap.dedent("""
    import json, sys
    from minillm_jax.train.trainer import train
    from tests.conftest import tiny_config
    config = tiny_config(data_dir=sys.argv[1], workdir=sys.argv[2], iterations=6, log_freq=1,
                         eval_freq=100, final_full_eval=False)
    result = train(config)
    print("RESULT", json.dumps(result["val_loss"]))
""")


def _run_devices(n, data_dir, workdir):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}",
           "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", _MULTI_DEVICE_SCRIPT, data_dir, workdir],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return _train_losses(workdir), json.loads(proc.stdout.split("RESULT")[-1])


def test_four_devices_match_one(tmp_path, shakespeare_dir):
    one, val_one = _run_devices(1, shakespeare_dir, str(tmp_path / "one"))
    four, val_four = _run_devices(4, shakespeare_dir, str(tmp_path / "four"))
    assert len(one) == 6
    assert four == pytest.approx(one, rel=2e-5)
    assert val_four == pytest.approx(val_one, rel=2e-5)


@pytest.mark.parametrize("overrides,message", [
    (dict(model="mamba"), "config.model='mamba' is unknown"),
    (dict(n_embd=60, n_head=8), "n_embd=60 is not divisible by config.n_head=8"),
    (dict(remat="some"), "config.remat='some' is unknown"),
    (dict(mesh_fsdp=3), "config.mesh_fsdp=3 must divide"),
])
def test_config_errors(tmp_path, overrides, message):
    config = tiny_config(workdir=str(tmp_path / "w"), **overrides)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        train(config)


def test_missing_data_dir_names_the_prepare_command(tmp_path):
    from minillm_jax.data import DataError

    config = tiny_config(dataset="slimpajama", data_dir=str(tmp_path / "nodata"),
                         workdir=str(tmp_path / "w"))
    with pytest.raises(DataError, match="minillm_jax.data.prepare"):
        train(config)


def test_unwritable_workdir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    config = tiny_config(workdir=str(blocker / "run"))
    with pytest.raises(ConfigError, match="config.workdir=.* is not writable"):
        train(config)


def test_nan_loss_stops_the_run(tmp_path, shakespeare_dir):
    config = tiny_config(data_dir=shakespeare_dir, workdir=str(tmp_path / "nan"), lr=1e9,
                         grad_clip=0.0, warmup_percent=0.0, iterations=30, eval_freq=100)
    # lr 1e9: the first update is applied, after it the gradient norm (and, depending on
    # rounding, the loss too) is nan; the message names the quantity that was not finite
    with pytest.raises(TrainingError, match=r"^the (loss|gradient norm) became nan.* at step \d+: "
                                            r"3 steps in a row"):
        train(config)
    assert not os.path.exists(os.path.join(config.workdir, "checkpoints", "30"))


def test_cli_reports_errors_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "minillm_jax.main", "--config", str(REPO / "configs" / "demo.py"),
         "--config.n_head=3", f"--config.workdir={tmp_path / 'w'}"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: config.n_embd=64 is not")
    assert "Traceback" not in proc.stderr


def test_train_time_excludes_the_evaluations_and_the_final_save(tmp_path, shakespeare_dir,
                                                                 monkeypatch):
    """train_time_s is training only: every evaluation, the final one included, and every save
    take 1000 s of a fake clock here, and none of it is counted."""
    from minillm_jax.train import evaluator, progress, run_checkpoints

    offset = [0.0]
    real_clock = progress.time.perf_counter
    monkeypatch.setattr(progress.time, "perf_counter", lambda: real_clock() + offset[0])

    def slow(method):
        def wrapped(*args, **kwargs):
            offset[0] += 1000.0
            return method(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(evaluator.Evaluator, "__call__", slow(evaluator.Evaluator.__call__))
    monkeypatch.setattr(run_checkpoints.RunCheckpoints, "save",
                        slow(run_checkpoints.RunCheckpoints.save))
    result = train(tiny_config(data_dir=shakespeare_dir, workdir=str(tmp_path / "run"),
                               iterations=10, eval_freq=5, log_freq=5))
    assert offset[0] >= 3000.0  # an evaluation at 5, the final save and the final evaluation
    assert 0.0 < result["train_time_s"] < 100.0
