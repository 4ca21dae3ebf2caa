"""The two-process case of a chaos run: two CPU processes (gloo collectives, started like a
multi-host job with JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID), where
process 1 cannot read the newest checkpoint. Both must fall back to the same older step within
a bounded time (no process waits forever for the other) and train on to the same end as before.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import time
from typing import Any

from minillm_jax.experiments import chaos_process as cp
from minillm_jax.experiments.chaos_child import ENV_UNREADABLE

# a start whose coordinator port was taken between choosing and binding it is tried again
BIND_FAILURES = ("address already in use", "failed to add port", "failed to bind")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(flags: dict[str, Any], env: dict[str, str], logs: list[str],
            unreadable: int | None) -> list[subprocess.Popen]:
    port, procs = _free_port(), []
    for i, log in enumerate(logs):
        proc_env = dict(env, JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2",
                        JAX_PROCESS_ID=str(i))
        if unreadable is not None and i == 1:
            proc_env[ENV_UNREADABLE] = str(unreadable)
        with open(log, "w") as out:
            procs.append(subprocess.Popen(cp.command(flags), cwd=cp.repo_root(), env=proc_env,
                                          stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True))
    return procs


def two_processes(flags: dict[str, Any], env: dict[str, str], timeout_s: float,
                  unreadable: int | None = None) -> tuple[list[int | None], list[str], float]:
    """Runs both processes to their end: (exit statuses, None for one killed at the timeout;
    their logs; wall seconds). A process that fails gets its peer killed."""
    workdir = flags["workdir"]
    os.makedirs(os.path.dirname(workdir), exist_ok=True)
    logs = [f"{workdir}.process{i}.txt" for i in range(2)]
    for attempt in range(3):
        t0 = time.monotonic()
        procs = _launch(flags, env, logs, unreadable)
        codes: list[int | None] = [None, None]
        while time.monotonic() - t0 < timeout_s and None in codes:
            codes = [p.poll() for p in procs]
            if any(c not in (None, 0) for c in codes):
                break
            time.sleep(0.1)
        for p in procs:  # a failed process's peer, or both at the timeout
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        wall = time.monotonic() - t0
        outputs = [open(log).read() for log in logs]
        if any(m in "".join(outputs).lower() for m in BIND_FAILURES) and attempt < 2:
            continue
        return codes, outputs, wall
    raise AssertionError("unreachable")


def fallback(workdir: str, flags: dict[str, Any], env: dict[str, str], newest: int,
             older: int, timeout_s: float) -> dict[str, Any]:
    """Resumes the two-process run in `workdir` (checkpoints `older` and `newest`) with process
    1 unable to read `newest`; returns the checks, the logs and the wall time. The continuation
    must equal the run that wrote `newest` bitwise (checkpoint and metrics)."""
    before = cp.records(workdir)
    codes, logs, wall = two_processes({**flags, "workdir": workdir}, env, timeout_s, newest)
    moved = sorted(glob.glob(os.path.join(workdir, "checkpoints_unreadable", f"{newest}-*")))
    resumed = f"resumed from {os.path.join(workdir, 'checkpoints', str(older))}\n"
    checks = {
        "both ended in time": None not in codes,
        "both exit 0": codes == [0, 0],
        f"both resumed from {older}": resumed in logs[0] and all(
            f"checkpoints/{newest} is unreadable" in log for log in logs),
        f"{newest} set aside": len(moved) == 1,
    }
    equal = False
    if all(checks.values()):
        mine = cp.arrays(os.path.join(workdir, "checkpoints", str(newest)))
        theirs = cp.arrays(moved[0])
        equal = (sorted(mine) == sorted(theirs) and all(
            mine[k].tobytes() == theirs[k].tobytes() for k in mine)
            and cp.records(workdir) == before)
    return {"checks": checks, "equal": equal, "wall_s": wall, "codes": codes, "logs": logs}


def two_process_fallback(setup: Any) -> dict[str, Any]:
    """The table row: a two-process run writes checkpoints 4 and 8; resumed with process 1
    unable to read 8, both fall back to 4 and end equal to the first run's step 8."""
    workdir = os.path.join(setup.scratch, "two_process", "run")
    flags = {**setup.flags(workdir), "iterations": 8, "save_every": 4, "eval_freq": 4,
             "keep": 0}
    codes, logs, _ = two_processes(flags, setup.env, setup.timeout_s)
    if codes != [0, 0] or cp.committed(workdir) != [4, 8]:
        raise cp.ChaosError(f"the two-process run failed (exit {codes}):\n{logs[0][-3000:]}\n"
                           f"{logs[1][-3000:]}")
    result = fallback(workdir, flags, setup.env, newest=8, older=4, timeout_s=120)
    failed = [name for name, ok in result["checks"].items() if not ok]
    detail = (f"process 1 cannot read step 8: both resumed from step 4 in "
              f"{result['wall_s']:.0f} s (limit 120 s)" if not failed else f"failed: {failed}")
    shutil.rmtree(os.path.join(workdir, "checkpoints_unreadable"), ignore_errors=True)
    return {"fault": "two processes, one cannot read the newest checkpoint", "count": 1,
            "survived": int(not failed), "equal": int(result["equal"]), "detail": detail}
