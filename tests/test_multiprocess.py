"""Multi-process training on one machine: two CPU processes (one device each, gloo collectives)
started like a multi-host job (`JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`,
`JAX_PROCESS_ID`) running `python -m minillm_jax.main --config configs/demo_2023.py`.

- Each process loads only its half of every global batch, and the two together train exactly
  like one process with the same global batch (losses, eval losses within float32 tolerance).
- A checkpoint written by two processes continues in one, and the reverse; both continuations
  equal the uninterrupted one-process run.

Every run is a fresh set of subprocesses sharing a persistent compilation cache, compiled with
LLVM optimisations off (tests/fast_compile.py); all runs use the same flags, so their numbers are
comparable.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from minillm_jax.train.metrics import read_metrics
from tests.conftest import REPO

# Runs the command line unchanged; a spy on TrainLoader records the first tokens of the rows this
# process loaded at each step (rows.<process index> in the workdir).
_MAIN = textwrap.dedent("""
    import json, os, runpy, sys
    from minillm_jax.data import loader as loader_lib
    next_batch, rows = loader_lib.TrainLoader.__next__, os.environ["MINILLM_TEST_ROWS"]
    def spy(self):
        batch = next_batch(self)
        with open(f"{rows}.{self.process_index}", "a") as f:
            f.write(json.dumps([self.process_count, batch["x"][..., :3].tolist()]) + "\\n")
        return batch
    loader_lib.TrainLoader.__next__ = spy
    sys.argv = ["minillm_jax.main"] + sys.argv[1:]
    runpy.run_module("minillm_jax.main", run_name="__main__", alter_sys=True)
""")

ITERATIONS, SAVE_AT, BATCH = 8, 4, 4
FLAGS = dict(n_layer=1, n_embd=32, n_head=2, sequence_length=16, batch_size=BATCH,
             iterations=ITERATIONS, eval_freq=SAVE_AT, eval_batches=1, log_freq=1,
             save_every=SAVE_AT, keep=0, sample_tokens=0, final_full_eval=False)
TIMEOUT_S = 300
RTOL = 1e-5


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    env = {k: v for k, v in os.environ.items() if not k.startswith(
        ("JAX_", "SLURM_", "OMPI_", "MINILLM_", "WANDB_", "XLA_"))}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO),
               XLA_FLAGS="--xla_backend_optimization_level=0 "
                         "--xla_llvm_disable_expensive_passes=true",
               JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jax_cache")),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Run:
    """One training run: `processes` subprocesses of the CLI on one workdir, started with the
    JAX_* variables (launcher="jax") or as the tasks of a SLURM step (launcher="slurm": JAX
    detects the coordinator, process count and index; MINILLM_DISTRIBUTED=1 asks for it)."""

    # The port is found free, then released for the coordinator to bind: another program may
    # take it in between. Such a start fails before any step; it is retried on another port.
    BIND_FAILURES = ("address already in use", "failed to add port", "failed to bind")
    RETRIES = 3

    def __init__(self, env: dict, data_dir: str, workdir: str, processes: int,
                 launcher: str = "jax", **flags):
        self.workdir, self.logs, self.procs = workdir, [], []
        os.makedirs(workdir, exist_ok=True)
        args = [f"--config.{k}={v}" for k, v in {**FLAGS, "data_dir": data_dir,
                                                 "workdir": workdir, **flags}.items()]
        self._start = (env, args, processes, launcher)
        self.retries = 0
        self._launch()

    def _launch(self) -> None:
        env, args, processes, launcher = self._start
        workdir = self.workdir
        self.logs, self.procs = [], []
        port = _free_port()
        for i in range(processes):
            proc_env = dict(env, MINILLM_TEST_ROWS=os.path.join(workdir, "rows"))
            if processes > 1 and launcher == "jax":
                proc_env.update(JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                                JAX_NUM_PROCESSES=str(processes), JAX_PROCESS_ID=str(i))
            elif processes > 1:
                proc_env.update(MINILLM_DISTRIBUTED="1", JAX_COORDINATOR_PORT=str(port),
                                SLURM_JOB_ID="4242", SLURM_STEP_ID="0",
                                SLURM_STEP_NODELIST="localhost", SLURM_STEP_NUM_NODES="1",
                                SLURM_NTASKS=str(processes), SLURM_PROCID=str(i),
                                SLURM_LOCALID=str(i))
            log = os.path.join(workdir, f"log.{i}.txt")
            with open(log, "w") as out:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-c", _MAIN, "--config", "configs/demo_2023.py", *args],
                    cwd=REPO, env=proc_env, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True))
            self.logs.append(log)

    def output(self, i: int = 0) -> str:
        with open(self.logs[i]) as f:
            return f.read()

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def failure(self) -> str | None:
        """None while running or after success; else what went wrong (the others are killed:
        a process whose peer died would wait for it until the distributed runtime times out)."""
        codes = [proc.poll() for proc in self.procs]
        if not any(c not in (None, 0) for c in codes):
            return None
        self.kill()
        logs = "\n".join(self.output(i) for i in range(len(self.procs))).lower()
        if self.retries < self.RETRIES and any(m in logs for m in self.BIND_FAILURES):
            self.retries += 1  # the coordinator's port was taken: start again on another one
            self._launch()
            return None
        return "\n".join(f"--- process {i} (exit {c}):\n{self.output(i)[-3000:]}"
                         for i, c in enumerate(codes))

    def done(self) -> bool:
        return all(proc.poll() is not None for proc in self.procs)


def _wait(*runs: _Run, timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    try:
        while not all(run.done() for run in runs):
            for run in runs:
                failure = run.failure()
                assert failure is None, f"{run.workdir} failed:\n{failure}"
            assert time.monotonic() < deadline, f"timed out after {timeout}s"
            time.sleep(0.2)
        for run in runs:
            failure = run.failure()
            assert failure is None, f"{run.workdir} failed:\n{failure}"
    finally:
        for run in runs:
            run.kill()


def _series(workdir: str) -> dict[tuple[int, str], float]:
    """{(step, key): value} of the losses a run logged."""
    return {(r["step"], k): v for r in read_metrics(workdir) for k, v in r.items()
            if k in ("train_loss", "val_loss", "final_val_loss")}


def _rows(workdir: str, processes: int) -> list[np.ndarray]:
    """Per step, the global batch the processes loaded (their rows concatenated in order)."""
    per_process = []
    for i in range(processes):
        with open(os.path.join(workdir, f"rows.{i}")) as f:
            records = [json.loads(line) for line in f]
        assert all(count == processes for count, _ in records)
        per_process.append([np.asarray(x) for _, x in records])
    for steps in per_process:  # each process loads only its share of the rows
        assert all(x.shape[1] == BATCH // processes for x in steps)
    return [np.concatenate(xs, axis=1) for xs in zip(*per_process)]


def _assert_close(got: dict, want: dict) -> float:
    """Same keys, values within RTOL; returns the largest relative difference."""
    assert sorted(got) == sorted(want)
    worst = max(abs(got[k] - want[k]) / abs(want[k]) for k in want)
    assert worst <= RTOL, {k: (got[k], want[k]) for k in want}
    return worst


def _continue_from(source: str, workdir: str) -> None:
    """A workdir holding only checkpoint SAVE_AT of `source`."""
    shutil.copytree(os.path.join(source, "checkpoints", str(SAVE_AT)),
                    os.path.join(workdir, "checkpoints", str(SAVE_AT)))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shakespeare_dir, env):
    """One process and two processes trained from scratch (at the same time)."""
    root = tmp_path_factory.mktemp("multiprocess")
    one, two = str(root / "one"), str(root / "two")
    # The two-process run starts with --config.overwrite=True on a workdir holding a run:
    # process 0 deletes it while process 1 must still see it (and then wait for the deletion).
    os.makedirs(two)
    with open(os.path.join(two, "metrics.jsonl"), "w") as f:
        f.write('{"step": 99, "train_loss": 1.0}\n')
    started = [_Run(env, shakespeare_dir, one, 1),
               _Run(env, shakespeare_dir, two, 2, resume=False, overwrite=True)]
    _wait(*started)
    return root, one, two


def test_two_processes_train_like_one(runs):
    _, one, two = runs
    reference, series = _series(one), _series(two)
    assert sorted(k for k in reference if k[1] == "train_loss") == [
        (s, "train_loss") for s in range(1, ITERATIONS + 1)]
    worst = _assert_close(series, reference)
    print(f"two processes vs one: largest relative loss difference {worst:.2e}")
    # process 1 loaded the second half of each global batch, process 0 the first
    assert all(np.array_equal(a, b) for a, b in zip(_rows(two, 2), _rows(one, 1), strict=True))
    out = open(os.path.join(two, "log.0.txt")).read()
    assert "mesh {'data': 2, 'fsdp': 1} on 2 cpu device(s)" in out
    assert "step 8/8" in out and "step 8/8" not in open(os.path.join(two, "log.1.txt")).read()
    assert not os.path.exists(os.path.join(two, "wandb_id.txt"))
    assert sorted(os.listdir(os.path.join(two, "checkpoints"))) == ["4", "8"]


def test_checkpoints_move_between_process_counts(runs, shakespeare_dir, env):
    """Two-process checkpoint -> one process, one-process checkpoint -> two processes (started
    as a SLURM step), each from step SAVE_AT to the end."""
    root, one, two = runs
    two_to_one, one_to_two = str(root / "two_to_one"), str(root / "one_to_two")
    _continue_from(two, two_to_one)
    _continue_from(one, one_to_two)
    continued = [_Run(env, shakespeare_dir, two_to_one, 1),
                 _Run(env, shakespeare_dir, one_to_two, 2, launcher="slurm")]
    _wait(*continued)
    reference = {k: v for k, v in _series(one).items() if k[0] > SAVE_AT}
    for run in continued:
        assert f"resumed from {os.path.join(run.workdir, 'checkpoints', str(SAVE_AT))}" in (
            run.output(0))
        worst = _assert_close(_series(run.workdir), reference)
        print(f"{os.path.basename(run.workdir)}: largest relative loss difference {worst:.2e}")
    # the two processes continued from the data position of the one-process checkpoint
    assert all(np.array_equal(a, b) for a, b in zip(
        _rows(one_to_two, 2), _rows(one, 1)[SAVE_AT:], strict=True))


def test_a_coordinator_port_taken_meanwhile_is_retried(tmp_path, shakespeare_dir, env,
                                                       monkeypatch):
    """The port chosen for the coordinator is taken by someone else before it binds (here: a
    socket this test holds): that start fails, and the run starts again on another port."""
    held = socket.socket(socket.AF_INET6)
    held.bind(("::", 0))
    held.listen()
    ports = iter([held.getsockname()[1]])
    real = _free_port
    monkeypatch.setattr(sys.modules[__name__], "_free_port", lambda: next(ports, None) or real())
    try:
        run = _Run(env, shakespeare_dir, str(tmp_path / "run"), 2, iterations=2, eval_freq=2,
                   save_every=2)
        _wait(run)
    finally:
        held.close()
    assert run.retries == 1
    assert "step 2/2" in run.output(0)


def test_a_process_that_cannot_read_the_newest_checkpoint_falls_back_with_the_other(
        runs, shakespeare_dir, env):
    """Process 1 cannot read checkpoint 8 of the two-process run (its read fails with EIO:
    minillm_jax/experiments/chaos_child.py): both processes fall back to step 4 together, well
    within the time limit (orbax's restore ends with a barrier across processes, which process 1
    skipped: process 0 waited there until killed), set 8 aside, and train steps 5-8 exactly as
    the first time (the new checkpoint 8 and metrics.jsonl bitwise)."""
    from minillm_jax.experiments.chaos_multiprocess import fallback

    root, _, two = runs
    workdir = str(root / "fallback")
    shutil.copytree(two, workdir, ignore=shutil.ignore_patterns("rows.*", "log.*"))
    result = fallback(workdir, {**FLAGS, "data_dir": shakespeare_dir}, env, newest=ITERATIONS,
                      older=SAVE_AT, timeout_s=180)
    assert all(result["checks"].values()), (result["checks"], result["codes"],
                                            [log[-3000:] for log in result["logs"]])
    assert result["equal"]
    print(f"both processes fell back to step {SAVE_AT} in {result['wall_s']:.0f} s")
