"""Chaos test of checkpointing and resume: kills at chosen moments, preemption, a full disk and
an unreadable checkpoint on one of two processes, each checked against an uninterrupted run.

    python tools/chaos.py --seed 0 --kills 21 --sigterms 3 [--budget-s 1800] [--json out.json]

A tiny model trains on the built-in shakespeare data (prepared into a scratch directory), in
real subprocesses (minillm_jax/experiments/chaos_child.py: the training CLI plus test-only
hooks). Each SIGKILL is aimed at a phase the child reports (an asynchronous checkpoint write
running, an evaluation running, a step) plus a random delay, and where it landed is read back
from the files it left. After every kill the same command resumes: it must resume from the
newest checkpoint complete at the kill. Every run that reaches its end must equal the
uninterrupted run bitwise: parameters, optimizer state, step and RNG key of the final
checkpoint, and every metrics.jsonl field but wall-clock times. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import os
import random
import re
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Any, Sequence

from minillm_jax.experiments import chaos_process as cp
from minillm_jax.experiments.chaos_child import ENV_ENOSPC, ENV_SLOW_WRITES
from minillm_jax.experiments.chaos_process import ChaosError
from minillm_jax.experiments.chaos_multiprocess import two_process_fallback

FLAGS = dict(n_layer=1, n_embd=32, n_head=2, sequence_length=16, batch_size=2, eval_batches=2,
             keep=2, log_freq=1, save_every_minutes=0, sample_tokens=0, final_full_eval=False,
             loss_chunk_size=0, dropout=0.1)
PHASES = ("save", "eval", "step")
DELAY_S = {"save": 0.05, "eval": 0.01, "step": 0.1}  # the random delay after the phase, at most
ROWS = {  # where a kill landed -> the row it is counted in
    "write": "SIGKILL during an asynchronous checkpoint write",
    "written": "SIGKILL just after a checkpoint write finished",
    "eval": "SIGKILL during an evaluation",
    "evaluated": "SIGKILL just after an evaluation",
    "step": "SIGKILL between steps",
    "sigterm": "SIGTERM (preemption): save, exit 0, resume",
}


@dataclasses.dataclass
class Setup:
    """Where the runs go and how they train (every run of a chaos test uses the same model)."""

    scratch: str
    data_dir: str
    env: dict[str, str]
    iterations: int = 40
    save_every: int = 4
    eval_freq: int = 6
    timeout_s: float = 300.0
    slow_writes_s: float = 0.0  # > 0: checkpoint writes take longer (chaos_child.py)
    launches: int = 0

    def flags(self, workdir: str) -> dict[str, Any]:
        return {**FLAGS, "iterations": self.iterations, "save_every": self.save_every,
                "eval_freq": self.eval_freq, "data_dir": self.data_dir, "workdir": workdir}

    def start(self, workdir: str, extra_env: dict[str, str] | None = None) -> cp.Child:
        """A training process on `workdir`; its log goes to <scratch>/logs."""
        self.launches += 1
        os.makedirs(os.path.join(self.scratch, "logs"), exist_ok=True)
        log = os.path.join(self.scratch, "logs",
                           f"{self.launches:02d}-{os.path.basename(workdir)}.txt")
        slow = {ENV_SLOW_WRITES: str(self.slow_writes_s)} if self.slow_writes_s else {}
        return cp.Child(self.flags(workdir), self.env, log, {**slow, **(extra_env or {})})

    def run(self, workdir: str, extra_env: dict[str, str] | None = None) -> tuple[int, str]:
        """Runs to the end (or the first error); (exit status, log). Checks the resume point."""
        expected = max(cp.committed(workdir), default=None)
        code, log = self.start(workdir, extra_env).finish(self.timeout_s)
        if code is None:
            raise ChaosError(f"{workdir}: no end after {self.timeout_s:.0f}s")
        check_resume(log, expected, workdir)
        return code, log


def make_setup(scratch: str, data_dir: str | None = None, **settings: Any) -> Setup:
    """Runs under `scratch`, on the built-in shakespeare data prepared there (or in data_dir)."""
    from minillm_jax.data import ensure_dataset

    data_dir = data_dir or os.path.join(scratch, "data")
    ensure_dataset("shakespeare", data_dir)
    return Setup(scratch, data_dir, cp.child_env(os.path.join(scratch, "jax_cache")),
                 **settings)


def check_resume(log: str, expected: int | None, workdir: str) -> None:
    """The process resumed from the newest complete checkpoint present when it started."""
    got = cp.resumed_from(log)
    if got != expected:
        raise ChaosError(f"{workdir}: resumed from {got}, but the newest complete checkpoint "
                         f"was {expected}")


def reference_run(setup: Setup) -> str:
    """The uninterrupted run every other run must equal."""
    workdir = os.path.join(setup.scratch, "reference")
    code, log = setup.run(workdir)
    if code != 0:
        raise ChaosError(f"the uninterrupted run failed (exit {code}):\n{log[-3000:]}")
    return workdir


def _finish_round(setup: Setup, workdir: str, reference: str) -> bool:
    """Runs `workdir` to its end; whether it then equals the reference bitwise."""
    code, log = setup.run(workdir)
    if code != 0:
        raise ChaosError(f"{workdir}: the resumed run failed (exit {code}):\n{log[-3000:]}")
    leftovers = cp.unfinished(workdir)
    if leftovers:
        raise ChaosError(f"{workdir}: unfinished checkpoint writes left behind: {leftovers}")
    return _equal(workdir, reference, setup.iterations)


def _equal(workdir: str, reference: str, step: int) -> bool:
    diff = cp.difference(workdir, reference, step)
    if diff is not None:
        print(f"  {workdir} is not equal to the uninterrupted run: {diff}", flush=True)
    return diff is None


def _landed(kind: str, step: int, workdir: str) -> str:
    """Where a kill aimed at `kind` at `step` landed, read from the files it left."""
    if kind == "save":
        return "written" if step in cp.committed(workdir) else "write"
    if kind == "eval":
        return "evaluated" if step in cp.logged(workdir, "val_loss") else "eval"
    return kind


def _interrupt(setup: Setup, workdir: str, fault: tuple[str, str], rng: random.Random,
               ) -> dict[str, Any] | None:
    """One process on `workdir`, interrupted by `fault` (signal, phase); None if it reached the
    end first. Checks that it resumed from the newest complete checkpoint."""
    sig, phase = fault
    before = max(cp.committed(workdir), default=None)
    child = setup.start(workdir)
    start = before or 0
    # past this process's first save, so that faults make progress (unless that save's write
    # is still running)
    step = child.wait_for(phase, start + setup.save_every + 2, setup.timeout_s)
    if step is not None:
        time.sleep(rng.uniform(0, DELAY_S[phase]))
        child.send(signal.SIGKILL if sig == "kill" else signal.SIGTERM)
    code, log = child.finish(setup.timeout_s)
    check_resume(log, before, workdir)
    # reached its end first: the fault came too late (a SIGTERM in the last step stops nothing)
    ended = code == 0 and f"final eval @ {setup.iterations}:" in log and (
        "stopped at step" not in log)
    if step is None or ended:
        if code != 0:
            raise ChaosError(f"{workdir}: the run failed (exit {code}):\n{log[-3000:]}")
        return None
    last = max(s for p, s in child.events if p == "step")
    after = cp.committed(workdir)
    record = {"signal": sig, "aimed": phase, "step": step, "resumed_from": before,
              "checkpoints_after": after, "last_step_started": last}
    if sig == "kill":
        if code != -signal.SIGKILL:
            raise ChaosError(f"{workdir}: SIGKILL, yet exit {code}:\n{log[-3000:]}")
        record["landed"] = _landed(phase, step, workdir)
        record["lost_steps"] = last - max(after, default=0)
        record["survived"] = True  # confirmed by the next process's resume check
    else:
        stopped = re.search(r"SIGTERM: stopped at step (\d+)/\d+ with a checkpoint", log)
        record["landed"] = "sigterm"
        record["survived"] = bool(code == 0 and stopped and int(stopped.group(1)) in after
                                  and int(stopped.group(1)) == max(after))
        if not record["survived"]:
            raise ChaosError(f"{workdir}: SIGTERM did not stop with a checkpoint (exit "
                             f"{code}):\n{log[-3000:]}")
        record["stopped_at"] = int(stopped.group(1))
    return record


def interruptions(setup: Setup, reference: str, kills: int, sigterms: int, seed: int,
                  deadline: float) -> list[dict[str, Any]]:
    """`kills` SIGKILLs (phases in turn: a checkpoint write, an evaluation, a step) and
    `sigterms` SIGTERMs at random phases, in random order, over as many runs as it takes; each
    run goes on to its end and is compared with the reference. Stops injecting at `deadline`."""
    rng = random.Random(seed)
    faults = [("kill", PHASES[i % len(PHASES)]) for i in range(kills)]
    faults += [("sigterm", rng.choice(PHASES)) for _ in range(sigterms)]
    rng.shuffle(faults)
    done: list[dict[str, Any]] = []
    rounds = 0
    while faults and time.monotonic() < deadline:
        rounds += 1
        workdir = os.path.join(setup.scratch, f"interrupted{rounds}")
        this_round: list[dict[str, Any]] = []
        ended = False
        while faults and time.monotonic() < deadline:
            record = _interrupt(setup, workdir, faults[0], rng)
            if record is None:  # the run ended first: the fault goes to the next run
                ended = True
                break
            faults.pop(0)
            record["run"] = rounds
            this_round.append(record)
            print(f"  run {rounds}: {record['signal']} aimed at {record['aimed']} "
                  f"{record['step']} landed: {record['landed']}; checkpoints "
                  f"{record['checkpoints_after']}", flush=True)
        if ended and cp.unfinished(workdir):
            raise ChaosError(f"{workdir}: unfinished checkpoint writes left behind")
        equal = (_equal(workdir, reference, setup.iterations) if ended else
                 _finish_round(setup, workdir, reference))
        for record in this_round:
            record["equal"] = equal
        done += this_round
    return done


def _mount_tmpfs(path: str, size: int, remount: bool = False) -> bool:
    """Mounts (or resizes) a tmpfs of `size` bytes at `path`; False where that is not allowed
    (not root, no mount)."""
    os.makedirs(path, exist_ok=True)
    options = f"{'remount,' if remount else ''}size={size}"
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", path],
                              capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(path) for name in names)


def full_disk(setup: Setup, reference: str, real: bool) -> dict[str, Any] | None:
    """A checkpoint write fails with ENOSPC: on a real tmpfs that holds two checkpoints and a
    half (real=True; None where mounting is not allowed), or injected into the JSON writes of
    step 12's checkpoint. The run must stop with one line naming the directory and the free
    space, keep the older checkpoints, commit no partial one, and (once space is freed: the
    tmpfs grows) resume from the newest kept to a run equal to the reference."""
    if real:
        mount = os.path.join(setup.scratch, "tmpfs")
        size = int(2.5 * _bytes(os.path.join(reference, "checkpoints",
                                              str(setup.iterations))))
        if not _mount_tmpfs(mount, size):
            return None
        workdir, env = os.path.join(mount, "run"), {}
        what = f"full disk (ENOSPC): a {size / 2**20:.0f} MiB tmpfs"
    else:
        workdir, env = os.path.join(setup.scratch, "full_disk"), {ENV_ENOSPC: "12"}
        what = "full disk (ENOSPC) injected into a checkpoint write"
    try:
        code, log = setup.run(workdir, env)
        errors = [line for line in log.splitlines() if line.startswith("error:")]
        failed_at = re.search(r"^error: the checkpoint for step (\d+) could not", log,
                              re.MULTILINE)
        step = int(failed_at.group(1)) if failed_at else -1
        kept = cp.committed(workdir)
        checks = {
            "exit status 2": code == 2,
            # orbax / tensorstore may print a traceback of their own from a write callback that
        # outlived its event loop ("Event loop is closed"); none may come from this package
        "one error line, no traceback of ours": len(errors) == 1 and not [
            line for line in log.splitlines()
            if line.lstrip().startswith("File ") and f"{os.sep}minillm_jax{os.sep}" in line],
            "names the directory and free space": bool(errors) and all(
                s in errors[0] for s in (os.path.join(workdir, "checkpoints"),
                                         os.strerror(errno.ENOSPC), "MiB free")),
            "older checkpoints kept, no partial one committed": kept == [
                step - 2 * setup.save_every, step - setup.save_every],
        }
        failed = [name for name, ok in checks.items() if not ok]
        if real and not failed:
            _mount_tmpfs(mount, 4 * size, remount=True)  # space freed
        equal = not failed and _finish_round(setup, workdir, reference)
    finally:
        if real:
            subprocess.run(["umount", mount], capture_output=True, timeout=60)
    detail = (errors[0] if errors else log[-300:]).replace(setup.scratch, "SCRATCH")
    return row(what, 1, int(not failed), int(equal),
               f"{detail}" + (f"; failed: {failed}" if failed else
                              f"; resumed from step {kept[-1]}"))


def row(fault: str, count: int, survived: int, equal: int | str, detail: str) -> dict:
    return {"fault": fault, "count": count, "survived": survived, "equal": equal,
            "detail": detail}


def interruption_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for landed, name in ROWS.items():
        group = [r for r in records if r["landed"] == landed]
        if not group:
            continue
        steps = ", ".join(str(r["step"]) for r in group)
        lost = max((r.get("lost_steps", 0) for r in group), default=0)
        detail = (f"at steps {steps}" + (f"; at most {lost} steps lost" if landed != "sigterm"
                                         else "; 0 steps lost"))
        rows.append(row(name, len(group), sum(r["survived"] for r in group),
                        sum(r["equal"] for r in group), detail))
    return rows


def data_rows(scratch: str, seed: int) -> list[dict[str, Any]]:
    """The damaged-data cases (minillm_jax/experiments/chaos_data.py)."""
    from minillm_jax.experiments.chaos_data import data_cases

    return data_cases(os.path.join(scratch, "data_cases"), seed)


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| fault | count | survived | equal to uninterrupted | detail |",
             "|---|---:|---:|---:|---|"]
    for r in rows:
        detail = str(r["detail"]).replace("|", "\\|").replace("\n", " ")
        equal = r["equal"] if isinstance(r["equal"], str) else f"{r['equal']}/{r['count']}"
        lines.append(f"| {r['fault']} | {r['count']} | {r['survived']}/{r['count']} | "
                     f"{equal} | {detail} |")
    return "\n".join(lines)


def chaos(scratch: str, *, seed: int = 0, kills: int = 21, sigterms: int = 3,
          budget_s: float = 1800.0, enospc: bool = True, tmpfs: bool = True,
          two_process: bool = True, data: bool = True, **settings: Any) -> dict[str, Any]:
    """Runs every case; returns {"rows": [...], "kills": [...], "wall_s": ...}."""
    t0 = time.monotonic()
    setup = make_setup(scratch, **settings)
    reference = reference_run(setup)
    rows = []
    if enospc:
        rows.append(full_disk(setup, reference, real=False))
        real = full_disk(setup, reference, real=True) if tmpfs else None
        rows += [real] if real is not None else []
    if two_process:
        rows.append(two_process_fallback(setup))
    records = interruptions(setup, reference, kills, sigterms, seed,
                            deadline=t0 + budget_s - 60)
    rows = interruption_rows(records) + rows
    if data:
        rows += data_rows(scratch, seed)
    done = sum(r["signal"] == "kill" for r in records)
    return {"rows": rows, "kills": records, "wall_s": time.monotonic() - t0,
            "kills_done": done, "kills_asked": kills, "seed": seed}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minillm_jax.experiments.chaos",
                                     description=__doc__.strip().splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kills", type=int, default=21, help="SIGKILLs (a third per phase)")
    parser.add_argument("--sigterms", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=1800.0,
                        help="no new fault is injected after this many seconds")
    parser.add_argument("--json", help="also write the table and every kill as JSON here")
    parser.add_argument("--scratch", help="directory for the runs (default: a temporary one, "
                        "deleted afterwards)")
    parser.add_argument("--skip-data", action="store_true", help="without the damaged-data rows")
    parser.add_argument("--skip-enospc", action="store_true")
    parser.add_argument("--skip-tmpfs", action="store_true",
                        help="no real full disk (a small tmpfs needs root and mount)")
    parser.add_argument("--skip-two-process", action="store_true")
    args = parser.parse_args(argv)
    from minillm_jax.config.cli import run_command

    return run_command(lambda: _run(args), {ChaosError: 1})


def _run(args: argparse.Namespace) -> int:
    scratch = args.scratch or tempfile.mkdtemp(prefix="minillm-chaos-")
    try:
        result = chaos(scratch, seed=args.seed, kills=args.kills, sigterms=args.sigterms,
                       budget_s=args.budget_s, enospc=not args.skip_enospc,
                       tmpfs=not args.skip_tmpfs, two_process=not args.skip_two_process,
                       data=not args.skip_data)
    finally:
        if not args.scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    print(table(result["rows"]))
    print(f"{result['kills_done']} of {result['kills_asked']} kills in "
          f"{result['wall_s']:.0f} s (seed {args.seed})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    ok = all(r["survived"] == r["count"] and r["equal"] in (r["count"], "n/a")
             for r in result["rows"])
    return 0 if ok and result["kills_done"] == args.kills else 1

if __name__ == "__main__":
    import sys

    sys.exit(main())
