"""wandb with the real package, offline (no network): a resumed run logs into the same wandb run,
and a failing wandb (at init, at log time, at finish) never changes or stops training.

All runs share one subprocess: wandb's global state (its service process, atexit hooks) stays
out of the test process, and the later runs load the first one's compiled programs from a
persistent compilation cache. The constant lr schedule makes a run stopped at step 2 and
continued to step 4 equal to an uninterrupted 4-step run.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import textwrap

import pytest

from minillm_jax.train.metrics import read_metrics
from tests.conftest import REPO

_SCRIPT = textwrap.dedent("""
    import sys
    from unittest import mock
    import wandb
    from minillm_jax.train.trainer import train
    from tests.conftest import tiny_config

    data_dir, root = sys.argv[1], sys.argv[2]

    def run(name, iterations=4, **overrides):
        print(f"=== {name}", file=sys.stderr, flush=True)
        train(tiny_config(n_layer=1, n_embd=32, n_head=2, sequence_length=16, batch_size=4,
                          eval_freq=2, eval_batches=1, log_freq=1, scheduler="constant",
                          data_dir=data_dir, workdir=f"{root}/{name}", iterations=iterations,
                          wandb_run_name=name, **overrides))

    def down(*args, **kwargs):
        raise RuntimeError("wandb is down")

    run("plain")
    run("resumed", iterations=2, wandb=True)
    run("resumed", iterations=4, wandb=True)  # continues the finished run: same wandb run
    with mock.patch.object(wandb, "init", down):
        run("init_fails", wandb=True)
    with mock.patch.object(wandb.Run, "log", down), mock.patch.object(wandb.Run, "finish", down):
        run("log_fails", wandb=True)
""")

# metrics.jsonl keys that measure time, not training
_TIMING = {"tokens_per_s", "step_time_s", "train_time_s", "val_time_s", "final_val_time_s"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shakespeare_dir):
    """{run name: its stderr}; the workdirs are root/<name>."""
    root = tmp_path_factory.mktemp("wandb_runs")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WANDB_", "JAX_", "XLA_", "MINILLM_"))}
    env.update(WANDB_MODE="offline", WANDB_DIR=str(root / "wandb_dir"), WANDB_SILENT="true",
               WANDB_CACHE_DIR=str(root / "wandb_cache"),
               WANDB_CONFIG_DIR=str(root / "wandb_config"),
               JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO),
               JAX_COMPILATION_CACHE_DIR=str(root / "jax_cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               XLA_FLAGS="--xla_backend_optimization_level=0 "
                         "--xla_llvm_disable_expensive_passes=true")
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, shakespeare_dir, str(root)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    stderr = {}
    for part in proc.stderr.split("=== ")[1:]:
        name, _, text = part.partition("\n")
        stderr[name] = stderr.get(name, "") + text
    return root, stderr


def _training(workdir) -> list[dict]:
    """metrics.jsonl without the timing values."""
    return [{k: v for k, v in r.items() if k not in _TIMING} for r in read_metrics(str(workdir))]


def test_resumed_run_logs_into_the_same_wandb_run(runs):
    root, stderr = runs
    workdir = root / "resumed"
    run_id = (workdir / "wandb_id.txt").read_text().strip()
    assert len(run_id) == 8 and run_id.isalnum()
    # wandb writes one offline directory per process start: both carry the same run id
    offline = sorted(glob.glob(str(workdir / "wandb" / "offline-run-*")))
    assert len(offline) == 2, offline
    for directory in offline:
        assert directory.endswith(f"-{run_id}")
        with open(os.path.join(directory, f"run-{run_id}.wandb"), "rb") as f:
            assert b"train_loss" in f.read()  # the history records were written
    assert "warning: wandb" not in stderr["resumed"]
    # wandb does not change training, and the resume continued exactly
    losses = [[r["train_loss"] for r in read_metrics(str(w)) if "train_loss" in r]
              for w in (workdir, root / "plain")]
    assert losses[0] == losses[1] and len(losses[0]) == 4


def test_wandb_failing_at_init_leaves_training_untouched(runs):
    root, stderr = runs
    assert "wandb could not start (RuntimeError: wandb is down)" in stderr["init_fails"]
    assert _training(root / "init_fails") == _training(root / "plain")


def test_wandb_failing_at_log_and_finish_leaves_training_untouched(runs):
    root, stderr = runs
    assert "wandb log failed at step 1 (RuntimeError: wandb is down)" in stderr["log_fails"]
    assert stderr["log_fails"].count("wandb log failed") == 1  # reported once, not every step
    assert "wandb could not finish the run" in stderr["log_fails"]
    assert _training(root / "log_fails") == _training(root / "plain")
    assert (root / "log_fails" / "wandb_id.txt").read_text().strip()


class _FakeWandb:
    """The public wandb API the writer uses: init(...) -> run with log / finish."""

    def __init__(self, hang_log=False):
        self.calls, self.hang_log = [], hang_log

    def init(self, **kwargs):
        self.calls.append(("init", kwargs["mode"]))
        fake = self

        class Run:
            def log(self, values, step):
                if fake.hang_log:
                    import time
                    time.sleep(30)
                fake.calls.append(("log", step))

            def finish(self, exit_code=None):
                fake.calls.append(("finish", exit_code))

        return Run()


@pytest.fixture
def fake_wandb(monkeypatch, tmp_path):
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    fake = _FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    return fake


def test_wandb_goes_online_with_wandb_login_credentials(fake_wandb, tmp_path, capsys):
    from minillm_jax.train.metrics import MetricsWriter

    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    writer = MetricsWriter(str(tmp_path), wandb=True)
    writer.close(0)
    assert fake_wandb.calls[0] == ("init", None)  # None: wandb's default, online
    assert "offline" not in capsys.readouterr().out


def test_wandb_offline_says_so_and_failed_runs_finish_with_their_exit_code(fake_wandb,
                                                                          tmp_path, capsys):
    from minillm_jax.train.metrics import MetricsWriter

    writer = MetricsWriter(str(tmp_path), wandb=True)  # no credentials at all
    writer.write(1, train_loss=2.0)
    writer.close(1)
    out = capsys.readouterr().out
    assert out.count("wandb: this run is offline (no wandb credentials: run `wandb login`") == 1
    assert fake_wandb.calls == [("init", "offline"), ("log", 1), ("finish", 1)]


def test_a_hanging_wandb_call_does_not_hang_training(fake_wandb, tmp_path, monkeypatch, capsys):
    import time

    from minillm_jax.train.metrics import MetricsWriter, read_metrics

    fake_wandb.hang_log = True
    monkeypatch.setattr(MetricsWriter, "TIMEOUT_S", 0.2)
    writer = MetricsWriter(str(tmp_path), wandb=True)
    started = time.perf_counter()
    for step in (1, 2, 3):
        writer.write(step, train_loss=1.0)
    writer.close(0)
    assert time.perf_counter() - started < 5  # one bounded wait, then wandb is off
    assert "wandb log did not return within 0.2 s" in capsys.readouterr().err
    assert [r["step"] for r in read_metrics(str(tmp_path))] == [1, 2, 3]
    assert ("finish", 0) not in fake_wandb.calls
