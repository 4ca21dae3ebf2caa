"""Exact resume of real training runs (subprocesses): SIGKILL between checkpoints, SIGTERM, the
metrics.jsonl continuation, and the wandb run id. Dropout is on, so equal losses also prove the
dropout masks are the same."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from minillm_jax.train.metrics import MetricsWriter, read_metrics
from tests.conftest import REPO

_RUN = textwrap.dedent("""
    import asyncio, json, os, signal, sys, time
    from minillm_jax.data import loader as loader_lib
    from minillm_jax.train.trainer import train
    from tests.conftest import tiny_config
    overrides, hooks = json.loads(sys.argv[1]), json.loads(sys.argv[2])

    # Deterministic interruption points (no timing windows): at a given micro-batch the run
    # sends itself SIGTERM, or announces itself in a marker file and hangs until killed.
    next_batch = loader_lib.TrainLoader.__next__
    def hooked(self):
        micro = self.next_micro_batch
        if micro == hooks.get("sigterm_at"):
            os.kill(os.getpid(), signal.SIGTERM)
        if micro == hooks.get("hang_at"):
            open(hooks["marker"], "w").write(str(micro))
            time.sleep(3600)
        return next_batch(self)
    loader_lib.TrainLoader.__next__ = hooked

    if "hang_writing" in hooks:  # the background write of this step's JSON items never ends
        from orbax.checkpoint._src.handlers import json_checkpoint_handler as handler
        save_fn = handler.JsonCheckpointHandler._save_fn
        async def hanging(self, x, directory):
            if os.path.basename(str(directory.parent)).startswith(f"{hooks['hang_writing']}."):
                open(hooks["marker"], "w").write(str(directory))
                await asyncio.sleep(3600)
            return await save_fn(self, x, directory)
        handler.JsonCheckpointHandler._save_fn = hanging

    result = train(tiny_config(**overrides))
    print("RESULT " + json.dumps({k: v for k, v in result.items()
                                  if isinstance(v, (int, float, str))}), flush=True)
""")

ITERATIONS = 20


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """All runs share a persistent compilation cache: the same program is compiled once."""
    cache = str(tmp_path_factory.mktemp("jax_cache"))
    return {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": cache,
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


def _start(env, data_dir, workdir, **hooks):
    overrides = dict(data_dir=data_dir, workdir=str(workdir), iterations=ITERATIONS,
                     save_every=5, keep=2, log_freq=1, eval_freq=10, eval_batches=1,
                     dropout=0.1, batch_size=2, sequence_length=16, loss_chunk_size=0)
    return subprocess.Popen([sys.executable, "-c", _RUN, json.dumps(overrides),
                             json.dumps(hooks)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out, err


def _wait_for(condition, proc, timeout=240):
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the run ended (rc {proc.returncode}) before the test could "
                                 f"interrupt it:\n{out[-2000:]}\n{err[-3000:]}")
        assert time.time() < deadline, "timed out waiting for the run"
        time.sleep(0.02)


def _records(workdir):
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:  # a kill may leave a cut-off last line
        return [json.loads(line) for line in f if line.strip().endswith("}")]


def _logged_steps(workdir):
    return [r["step"] for r in _records(workdir) if "train_loss" in r]


def _series(workdir, key):
    return {r["step"]: r[key] for r in read_metrics(workdir) if key in r}


def _checkpoints(workdir):
    directory = os.path.join(workdir, "checkpoints")
    return sorted(int(d) for d in os.listdir(directory) if d.isdigit()) if os.path.isdir(
        directory) else []


@pytest.fixture(scope="module")
def reference(tmp_path_factory, shakespeare_dir, env):
    """The uninterrupted run (it also fills the compilation cache)."""
    workdir = str(tmp_path_factory.mktemp("uninterrupted") / "run")
    _finish(_start(env, shakespeare_dir, workdir))
    return workdir


def _assert_equals_reference(workdir, reference):
    records = read_metrics(workdir)
    keys = [(r["step"], k) for r in records for k in r if k != "step"]
    assert len(keys) == len(set(keys)), "a step was logged twice"
    losses = _series(workdir, "train_loss")
    assert sorted(losses) == list(range(1, ITERATIONS + 1))
    assert losses == _series(reference, "train_loss")  # exactly, not approximately
    for key in ("lr", "grad_norm", "val_loss", "final_val_loss"):
        assert _series(workdir, key) == _series(reference, key), key


def test_preempted_and_killed_run_resumes_exactly(tmp_path, shakespeare_dir, env, reference):
    """SIGTERM -> clean exit with a checkpoint at the step reached; resume; SIGKILL between
    checkpoints; resume to the end: every logged value equals the uninterrupted run's."""
    workdir = str(tmp_path / "run")

    # 1. SIGTERM (sent while step 4's batch is read): save at the step reached, exit 0
    out, _ = _finish(_start(env, shakespeare_dir, workdir, sigterm_at=3))
    stopped = int(re.search(r"SIGTERM: stopped at step (\d+)/20 with a checkpoint", out).group(1))
    assert stopped == 4 and '"interrupted": "SIGTERM"' in out
    assert stopped in _checkpoints(workdir)  # the step it reached, not the last save_every
    assert max(_logged_steps(workdir)) == stopped

    # 2. resume, then SIGKILL while it reads step 14's batch (step 10 saved, 11-12 logged)
    marker = str(tmp_path / "hanging")
    proc = _start(env, shakespeare_dir, workdir, hang_at=13, marker=marker)
    _wait_for(lambda: os.path.exists(marker) and 10 in _checkpoints(workdir), proc)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert f"resumed from {os.path.join(workdir, 'checkpoints', str(stopped))}\n" in out
    killed_at = max(_logged_steps(workdir))
    assert killed_at == 12

    # 3. resume to the end
    out, _ = _finish(_start(env, shakespeare_dir, workdir))
    resumed_from = int(re.search(r"resumed from \S+/checkpoints/(\d+)", out).group(1))
    assert resumed_from == 10

    _assert_equals_reference(workdir, reference)
    assert _checkpoints(workdir) == [15, 20]  # keep=2


def test_kill_during_an_async_save_resumes_from_the_previous_checkpoint(tmp_path, shakespeare_dir,
                                                                        env, reference):
    """kill -9 while the checkpoint of step 10 is being written (its write hangs, so the kill
    lands inside it every time): the unfinished step 10 is ignored and cleaned up, the run
    resumes from step 5 and ends exactly as the uninterrupted run."""
    workdir, marker = str(tmp_path / "run"), str(tmp_path / "writing")
    proc = _start(env, shakespeare_dir, workdir, hang_writing=10, marker=marker)
    _wait_for(lambda: os.path.exists(marker), proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert _checkpoints(workdir) == [5]
    leftovers = os.listdir(os.path.join(workdir, "checkpoints"))
    assert any(name.startswith("10.orbax-checkpoint-tmp") for name in leftovers), leftovers

    out, _ = _finish(_start(env, shakespeare_dir, workdir))
    assert f"resumed from {os.path.join(workdir, 'checkpoints', '5')}\n" in out
    _assert_equals_reference(workdir, reference)
    assert os.listdir(os.path.join(workdir, "checkpoints")) and _checkpoints(workdir) == [15, 20]
    assert not [n for n in os.listdir(os.path.join(workdir, "checkpoints")) if "tmp" in n]


def test_wandb_run_id_is_kept_for_resume(tmp_path, monkeypatch):
    """A resumed run logs into the same wandb run: the id lives in <workdir>/wandb_id.txt.
    (tests/test_wandb.py does the same with the real wandb package, offline.)"""
    calls = []

    class FakeRun:
        def log(self, values, step):
            calls.append(("log", step))

        def finish(self, exit_code=0):
            calls.append(("finish", exit_code))

    class FakeWandb:  # the public API only: no wandb.util
        @staticmethod
        def init(**kwargs):
            calls.append(("init", kwargs["id"], kwargs["resume"]))
            return FakeRun()

    monkeypatch.setitem(sys.modules, "wandb", FakeWandb)
    for step in (5, 6):
        writer = MetricsWriter(str(tmp_path), wandb=True)
        writer.write(step, train_loss=1.0)
        writer.close()
    run_id = (tmp_path / "wandb_id.txt").read_text()
    assert len(run_id) == 8 and run_id.isalnum()
    assert calls == [("init", run_id, "allow"), ("log", 5), ("finish", 0),
                     ("init", run_id, "allow"), ("log", 6), ("finish", 0)]
