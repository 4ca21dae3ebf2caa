"""python -m minillm_jax.evaluate and python -m minillm_jax.sample on a tiny checkpoint."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from minillm_jax import checkpointing
from minillm_jax import config as config_lib
from minillm_jax import evaluate
from tests.conftest import REPO, tiny_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, shakespeare_dir):
    """A params-only checkpoint of the tiny model (random weights: nothing is compiled)."""
    from minillm_jax.model import abstract_params, build_model

    workdir = str(tmp_path_factory.mktemp("run"))
    config = config_lib.build_config(tiny_config(data_dir=shakespeare_dir, workdir=workdir))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: (0.02 * rng.normal(size=s.shape)).astype(s.dtype),
                          abstract_params(build_model(config.model)))
    checkpointing.save_params(workdir, config, params, step=12)
    return workdir


@pytest.fixture(scope="module")
def small_data(tmp_path_factory, shakespeare_dir):
    """The prepared corpus with only its first 1024 validation tokens (a quick full eval)."""
    out = tmp_path_factory.mktemp("small")
    meta = json.load(open(os.path.join(shakespeare_dir, "meta.json")))
    meta["val"] = {"tokens": 1024, "bytes": 3300, "documents": 1}
    (out / "meta.json").write_text(json.dumps(meta))
    shutil.copy(os.path.join(shakespeare_dir, "train.bin"), out / "train.bin")
    val = np.fromfile(os.path.join(shakespeare_dir, "val.bin"), np.uint16)[:1024]
    val.tofile(out / "val.bin")
    return str(out)


@pytest.fixture(scope="module")
def cli_runs(run_dir, small_data):
    """Both CLIs, run side by side (each one is mostly interpreter start-up and compiling)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    commands = {
        "evaluate": ["--workdir", run_dir, "--data", small_data],
        "sample": ["--workdir", run_dir, "--prompt", "ROMEO:", "--max-new-tokens", "6",
                   "--temperature", "0.9", "--top-k", "50", "--seed", "0", "--num-samples", "2"],
    }
    procs = {name: subprocess.Popen([sys.executable, "-m", f"minillm_jax.{name}", *args],
                                    cwd=REPO, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
             for name, args in commands.items()}
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        results[name] = (proc.returncode, out, err)
    return results


def test_evaluate_cli(cli_runs, small_data):
    returncode, stdout, stderr = cli_runs["evaluate"]
    assert returncode == 0, stderr[-3000:]
    assert "INFO" not in stderr  # orbax's per-file logging is silenced
    lines = stdout.strip().splitlines()
    assert lines[0].startswith("step 12 | val loss ")
    result = json.loads(lines[-1])
    assert result["step"] == 12 and result["data_dir"] == small_data
    assert result["val_tokens"] == (1024 - 1) // 32 * 32  # the whole (small) validation set
    assert 10.0 < result["val_loss"] < 11.5  # random weights: about ln(50304)
    assert result["val_perplexity"] == pytest.approx(math.exp(result["val_loss"]))
    assert 0 <= result["val_acc"] < 0.05
    assert result["val_bpb"] == pytest.approx(result["val_loss"] / math.log(2) * 1024 / 3300)


def test_evaluate_cli_errors(run_dir, tmp_path, capsys):
    assert evaluate.main(["--workdir", run_dir, "--step", "99"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no checkpoint for step 99 in") and "steps: [12]" in err
    assert evaluate.main(["--workdir", str(tmp_path / "nothing")]) == 2
    assert "error: no checkpoint in" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "nothing")  # reading creates nothing


def test_sample_cli(cli_runs):
    returncode, stdout, stderr = cli_runs["sample"]
    assert returncode == 0, stderr[-3000:]
    assert "INFO" not in stderr
    samples = stdout.split("-" * 40 + "\n")
    assert len(samples) == 2 and all(s.startswith("ROMEO:") for s in samples)
    assert all(len(s.strip()) > len("ROMEO:") for s in samples)
