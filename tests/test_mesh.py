"""A (data 2, fsdp 2) mesh on 4 simulated CPU devices, end to end: training, a periodic eval, the
final (asynchronous) checkpoint save immediately followed by the final eval, then a resume that
reads the checkpoint back (fingerprints checked) and evaluates it again.

XLA_FLAGS must be set before jax initialises, so each run is a subprocess. The subprocess timeout
turns a collective hang (XLA:CPU aborts a stuck rendezvous after 40 s) into a test failure instead
of a stuck test run.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from minillm_jax.train.metrics import read_metrics
from tests.conftest import REPO

_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax
    from minillm_jax.train.trainer import train
    from tests.conftest import tiny_config
    data_dir, workdir, fsdp = sys.argv[1], sys.argv[2], int(sys.argv[3])
    # 8 iterations: periodic eval at 4 (no save there), final save at 8 followed by the final
    # eval while that save is still being written in the background.
    config = tiny_config(data_dir=data_dir, workdir=workdir, iterations=8, eval_freq=4,
                         eval_batches=3, log_freq=1, mesh_fsdp=fsdp, final_full_eval=False)
    result = train(config)
    print("RESULT", json.dumps({"val_loss": result["val_loss"], "step": result["step"],
                                "devices": jax.device_count(), "mesh": fsdp}))
""")


def _run(n_devices, fsdp, data_dir, workdir, timeout=480):
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={n_devices}"}
    try:
        proc = subprocess.run([sys.executable, "-c", _SCRIPT, data_dir, workdir, str(fsdp)],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"{n_devices} devices, fsdp {fsdp}: no result after {timeout}s (hang?)\n"
                    f"{(err.stderr or b'')[-3000:]!r}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("RESULT")[-1])


def _losses(workdir):
    return [r["train_loss"] for r in read_metrics(workdir) if "train_loss" in r]


def test_mesh_2x2_trains_saves_and_evaluates(tmp_path, shakespeare_dir):
    one = _run(1, 1, shakespeare_dir, str(tmp_path / "one"))
    mesh_dir = str(tmp_path / "mesh")
    mesh = _run(4, 2, shakespeare_dir, mesh_dir)
    assert mesh["devices"] == 4 and mesh["step"] == 8
    # training and both evals match the single-device run
    assert len(_losses(mesh_dir)) == 8
    assert _losses(mesh_dir) == pytest.approx(_losses(str(tmp_path / "one")), rel=2e-5)
    records = read_metrics(mesh_dir)
    periodic = [r for r in records if r["step"] == 4 and "val_loss" in r]
    assert len(periodic) == 1
    one_periodic = [r for r in read_metrics(str(tmp_path / "one"))
                    if r["step"] == 4 and "val_loss" in r]
    assert periodic[0]["val_loss"] == pytest.approx(one_periodic[0]["val_loss"], rel=2e-5)
    assert records[-1]["step"] == 8 and "final_val_loss" in records[-1]
    assert mesh["val_loss"] == pytest.approx(one["val_loss"], rel=2e-5)
    # the final save committed (it was still being written during the final eval)
    assert os.path.isdir(os.path.join(mesh_dir, "checkpoints", "8"))
    # the checkpoint restores on the same mesh (fingerprints checked) and evaluates the same
    again = _run(4, 2, shakespeare_dir, mesh_dir)
    assert again["step"] == 8
    assert again["val_loss"] == pytest.approx(mesh["val_loss"], rel=1e-6)
