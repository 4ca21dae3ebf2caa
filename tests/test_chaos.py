"""A short chaos run (minillm_jax/experiments/chaos.py; `python tools/chaos.py` is the full one)
and the stop signals, in real subprocesses: SIGKILLs aimed at an asynchronous checkpoint write,
an evaluation and a step, a SIGTERM, a full disk during a checkpoint write, Ctrl-C, and a second
signal while the stop checkpoint is being written. Every run that reaches its end must equal
the uninterrupted run bitwise (final parameters, optimizer state, step and RNG key; every
metrics.jsonl field but wall-clock times). Checkpoint writes are slowed by 0.3 s
(MINILLM_CHAOS_SLOW_WRITES) so that a kill aimed at a running write lands inside it on any
machine."""

from __future__ import annotations

import re
import signal
import time

import pytest

from minillm_jax.experiments import chaos
from minillm_jax.experiments import chaos_process as cp


@pytest.fixture(scope="module")
def setup(tmp_path_factory, shakespeare_dir):
    """The runs' setup and the uninterrupted run every other run is compared with."""
    setup = chaos.make_setup(str(tmp_path_factory.mktemp("chaos")), data_dir=shakespeare_dir,
                             slow_writes_s=0.3)
    return setup, chaos.reference_run(setup)


def test_kills_and_a_sigterm_lose_nothing(setup):
    """5 SIGKILLs (phases in turn: a checkpoint write, an evaluation, a step) and a SIGTERM:
    every resume starts from the newest complete checkpoint (chaos raises otherwise), at least
    one kill landed inside an asynchronous write, and every run ends equal to the reference."""
    setup, reference = setup
    kills = chaos.interruptions(setup, reference, kills=5, sigterms=1, seed=0,
                                deadline=time.monotonic() + 600)
    assert sum(k["signal"] == "kill" for k in kills) == 5
    assert [k for k in kills if k["signal"] == "sigterm"], kills
    assert [k for k in kills if k["landed"] == "write"], kills
    for k in kills:
        assert k["survived"] and k["equal"], k
        if k["landed"] == "write":  # the unfinished step was not committed, nor resumed from
            assert k["step"] not in k["checkpoints_after"]
    rows = chaos.interruption_rows(kills)
    assert all(r["survived"] == r["equal"] == r["count"] for r in rows), rows
    print(chaos.table(rows))


def test_a_full_disk_stops_the_run_with_one_line_and_keeps_the_older_checkpoints(setup):
    setup, reference = setup
    row = chaos.full_disk(setup, reference, real=False)
    assert row["survived"] == row["equal"] == 1, row
    assert "could not be written to" in row["detail"] and "MiB free there" in row["detail"]
    assert "Checkpoints kept: 4, 8." in row["detail"]


def _signal_run(setup, workdir, sig, second: bool):
    """Starts a run on `workdir`, sends `sig` at a step, and (second=True) `sig` again once
    the stop checkpoint is being written; returns (stop step or None, exit status, log, the
    checkpoints complete after it)."""
    before = max(cp.committed(workdir), default=0)
    child = setup.start(workdir)
    assert child.wait_for("step", before + 2, 300) is not None
    child.send(sig)
    saving = None
    if second:
        saving = child.wait_for("save", before + 2, 120)
        assert saving is not None
        child.send(sig)
    code, log = child.finish(300)
    return saving, code, log, cp.committed(workdir)


def test_ctrl_c_and_a_second_signal(setup):
    """Ctrl-C (SIGINT): the step ends, its checkpoint is written, exit 0. A second Ctrl-C while
    that checkpoint is written: KeyboardInterrupt once the write has finished (the checkpoint is
    complete). A second SIGTERM while it is written: the process ends at once, the unfinished
    write is ignored, the previous checkpoints are intact. The run then ends equal to the
    uninterrupted one."""
    setup, reference = setup
    workdir = f"{setup.scratch}/signals"

    _, code, log, kept = _signal_run(setup, workdir, signal.SIGINT, second=False)
    stopped = re.search(r"SIGINT: stopped at step (\d+)/\d+ with a checkpoint", log)
    assert code == 0 and stopped, log[-3000:]
    assert int(stopped.group(1)) == max(kept)

    saving, code, log, kept = _signal_run(setup, workdir, signal.SIGINT, second=True)
    # KeyboardInterrupt where the second signal found the main thread (the checkpoint's write
    # runs in the background), and the run still waits for that write before it ends
    assert code == -signal.SIGINT and "KeyboardInterrupt" in log, (code, log[-3000:])
    assert saving == max(kept) and not cp.unfinished(workdir)  # written to the end

    saving, code, log, kept = _signal_run(setup, workdir, signal.SIGTERM, second=True)
    assert code == -signal.SIGTERM, (code, log[-3000:])
    assert saving not in kept and cp.unfinished(workdir)  # the write was cut off

    code, log = setup.run(workdir)  # resumes from the newest complete checkpoint (checked)
    assert code == 0, log[-3000:]
    assert cp.difference(workdir, reference, setup.iterations) is None
