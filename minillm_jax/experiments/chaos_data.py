"""Damaged data and a killed `prepare`, each through the real command in a subprocess.

`data_cases(scratch, seed)` gives one row per case (the chaos tool, minillm_jax/experiments/
chaos.py, adds them to its table). A damaged-data case survives when the training CLI
(`python -m minillm_jax.main --config configs/demo_2023.py --config.data_dir=DIR` with a tiny
model) refuses it before compiling: a non-zero exit, no traceback, and output ending in one
`error: ...` line. The prepare case survives when a prepare killed with SIGKILL leaves a directory
the loader refuses (saying to rerun prepare) and a rerun writes what an uninterrupted prepare
writes, byte for byte (meta.json's "prepare" timings aside).

The damage is drawn from `seed`: which token is set out of range and to what, the shuffle's
permutation, after how many tokenized groups a prepare is killed.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import shutil
import subprocess
import sys
from typing import Any, Callable, Sequence

import numpy as np

from minillm_jax.data import DataError, load_meta, prepare_dataset
from minillm_jax.data.format import SPLITS, TOKEN_DTYPE

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VOCAB_SIZE = 50304  # configs/base.py's vocab_size, which demo_2023 keeps
TINY = ("--config.n_layer=2", "--config.n_embd=64", "--config.n_head=4",
        "--config.sequence_length=32", "--config.batch_size=8", "--config.eval_batches=2",
        "--config.eval_freq=1000", "--config.log_freq=1000", "--config.sample_tokens=0",
        "--config.final_full_eval=False")
COMPILED = "compiled train step"  # the trainer's log line once the step is compiled
TIMEOUT_S = 300

# A process that kills itself at a fixed point of prepare, then runs the real prepare CLI:
# argv = point ("groups": before tokenized group n+1 is written; "renames": before rename n+1,
# the third being meta.json's), n, then prepare's own arguments.
_KILLER = """
import os, signal, sys
from minillm_jax.data import prepare, writer
point, n = sys.argv[1], int(sys.argv[2])
seen = [0]
def dies_after(fn):
    def wrapped(*args, **kwargs):
        seen[0] += 1
        if seen[0] > n:
            os.kill(os.getpid(), signal.SIGKILL)
        return fn(*args, **kwargs)
    return wrapped
if point == "groups":
    writer.Writer._drain_one = dies_after(writer.Writer._drain_one)
else:
    os.replace = dies_after(os.replace)
sys.exit(prepare.main(sys.argv[3:]))
"""


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"),
            "PYTHONPATH": REPO + (os.pathsep + path if path else "")}


def train_cli(data_dir: str, workdir: str, iterations: int, *extra: str,
              ) -> subprocess.CompletedProcess:
    """The training CLI on `data_dir` with a tiny model; its output, stderr after stdout."""
    argv = [sys.executable, "-m", "minillm_jax.main", "--config",
            os.path.join(REPO, "configs", "demo_2023.py"), f"--config.data_dir={data_dir}",
            f"--config.workdir={workdir}", f"--config.iterations={iterations}", *TINY, *extra]
    return subprocess.run(argv, cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=TIMEOUT_S)


def refusal(proc: subprocess.CompletedProcess) -> tuple[bool, str]:
    """Whether `proc` refused as required (non-zero exit before compiling, no traceback, output
    ending in one `error:` line) and the line the user saw (else what went wrong)."""
    output = (proc.stdout or "") + (proc.stderr or "")
    lines = [line for line in output.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if proc.returncode == 0:
        return False, f"exit 0: {last}"
    if "Traceback" in output:
        return False, f"traceback (exit {proc.returncode}): {last}"
    if COMPILED in output:
        return False, f"refused only after compiling: {last}"
    return last.startswith("error: "), last


def _copy(clean: str, target: str) -> str:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(clean, target)
    return target


def _tokens(data_dir: str, split: str) -> np.memmap:
    return np.memmap(os.path.join(data_dir, f"{split}.bin"), TOKEN_DTYPE, mode="r+")


def _truncate(split: str) -> Callable[[str, np.random.Generator], None]:
    def damage(data_dir: str, rng: np.random.Generator) -> None:
        path = os.path.join(data_dir, f"{split}.bin")
        os.truncate(path, os.path.getsize(path) - 1)
    return damage


def _out_of_vocab(split: str) -> Callable[[str, np.random.Generator], None]:
    def damage(data_dir: str, rng: np.random.Generator) -> None:
        tokens = _tokens(data_dir, split)
        tokens[int(rng.integers(tokens.size))] = int(rng.integers(VOCAB_SIZE, 1 << 16))
        tokens.flush()
    return damage


def _empty(split: str) -> Callable[[str, np.random.Generator], None]:
    def damage(data_dir: str, rng: np.random.Generator) -> None:
        open(os.path.join(data_dir, f"{split}.bin"), "wb").close()
    return damage


DAMAGE = {
    "train.bin truncated by one byte": _truncate("train"),
    "val.bin truncated by one byte": _truncate("val"),
    "train.bin token >= vocab_size": _out_of_vocab("train"),
    "val.bin token >= vocab_size": _out_of_vocab("val"),
    "val.bin empty": _empty("val"),
    "train.bin empty": _empty("train"),
}
RESUME_CASE = "train.bin shuffled in place between a run and its resume"
PREPARE_CASE = "prepare killed (SIGKILL) mid-way, then rerun"
CASES = (*DAMAGE, RESUME_CASE, PREPARE_CASE)


def row(fault: str, count: int, survived: int, equal: int | str, detail: str,
        ) -> dict[str, Any]:
    return {"fault": fault, "count": count, "survived": survived, "equal": equal,
            "detail": detail}


def damaged_case(fault: str, clean: str, scratch: str, rng: np.random.Generator,
                 ) -> Callable[[], dict]:
    """Damages a copy of `clean` now (drawing from `rng` in order); returns the CLI run."""
    data_dir = _copy(clean, os.path.join(scratch, f"case{CASES.index(fault)}-data"))
    DAMAGE[fault](data_dir, rng)

    def run() -> dict:
        ok, line = refusal(train_cli(data_dir, data_dir[:-len("data")] + "run", 2))
        return row(fault, 1, int(ok), "n/a", line)
    return run


def resume_case(clean: str, scratch: str, rng: np.random.Generator) -> dict:
    """Trains 4 steps, shuffles train.bin in place (same size), resumes to 8: refused."""
    data_dir = _copy(clean, os.path.join(scratch, "resume-data"))
    workdir = os.path.join(scratch, "resume-run")
    shutil.rmtree(workdir, ignore_errors=True)
    first = train_cli(data_dir, workdir, 4)
    if first.returncode != 0:
        return row(RESUME_CASE, 1, 0, "n/a", f"the first run failed: {first.stderr.strip()[-300:]}")
    tokens = _tokens(data_dir, "train")
    tokens[:] = rng.permutation(np.asarray(tokens))
    tokens.flush()
    ok, line = refusal(train_cli(data_dir, workdir, 8))
    return row(RESUME_CASE, 1, int(ok), "n/a", line)


def _files(data_dir: str) -> dict[str, bytes]:
    out = {split: open(os.path.join(data_dir, f"{split}.bin"), "rb").read() for split in SPLITS}
    meta = json.load(open(os.path.join(data_dir, "meta.json")))
    meta.pop("prepare", None)  # its timings and date differ from run to run
    out["meta.json"] = json.dumps(meta, sort_keys=True).encode()
    return out


def kill_prepare(out_dir: str, point: str, n: int, dataset: str = "shakespeare",
                 extra: Sequence[str] = ()) -> subprocess.CompletedProcess:
    """The prepare CLI, SIGKILLed by itself at (point, n): see _KILLER."""
    argv = [sys.executable, "-c", _KILLER, point, str(n), "--dataset", dataset, "--out", out_dir,
            "--no-progress", "--num-proc", "1", *extra]
    return subprocess.run(argv, cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=TIMEOUT_S)


def rerun_prepare(out_dir: str, dataset: str = "shakespeare",
                  extra: Sequence[str] = ()) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "minillm_jax.data.prepare", "--dataset", dataset, "--out",
            out_dir, "--no-progress", "--num-proc", "1", *extra]
    return subprocess.run(argv, cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=TIMEOUT_S)


def _kill_and_rerun(out: str, point: str, n: int, want: dict[str, bytes]) -> tuple[bool, bool, str]:
    """(partial output refused, rerun identical, the line the loader gave) for one kill."""
    shutil.rmtree(out, ignore_errors=True)
    killed = kill_prepare(out, point, n)
    if killed.returncode != -9:
        return False, False, f"prepare was not killed at {point} {n} (exit {killed.returncode})"
    try:
        load_meta(out)
        refused, line = False, f"killed at {point} {n}, the partial output was read as data"
    except DataError as err:
        refused, line = "rerun" in str(err), f"error: {err}"
    rerun = rerun_prepare(out)
    same = rerun.returncode == 0 and _files(out) == want
    return refused, same, line if same else f"{line} (the rerun differs)"


def prepare_case(clean: str, scratch: str, rng: np.random.Generator,
                 pool: cf.Executor) -> Callable[[], dict]:
    """prepare killed at three points (mid-tokenizing, before the token files' renames, before
    meta.json's), each partial output offered to the loader, then prepare rerun."""
    want = _files(clean)
    points = [("groups", int(rng.integers(1, 4))), ("renames", 0), ("renames", 2)]
    futures = [pool.submit(_kill_and_rerun, os.path.join(scratch, f"prepare{i}"), point, n, want)
               for i, (point, n) in enumerate(points)]

    def result() -> dict:
        done = [f.result() for f in futures]
        failed = [line for refused, same, line in done if not (refused and same)]
        return row(PREPARE_CASE, len(points), len(points) - len(failed),
                   sum(bool(same) for _, same, _ in done),  # reruns byte-identical
                   failed[0] if failed else done[-1][2])
    return result


def data_cases(scratch: str, seed: int = 0, only: Sequence[str] | None = None) -> list[dict]:
    """One row per damaged-data case and one for the killed prepare (module docstring), in the
    order of CASES; `only`: the faults to run (default all). The damage is drawn in order from
    `seed`, then the subprocesses run side by side (up to 4)."""
    unknown = sorted(set(only or ()) - set(CASES))
    if unknown:
        raise ValueError(f"unknown data case(s) {unknown}: expected some of {', '.join(CASES)}")
    os.makedirs(scratch, exist_ok=True)
    rng = np.random.default_rng(seed)
    clean = os.path.join(scratch, "clean")
    shutil.rmtree(clean, ignore_errors=True)
    prepare_dataset("shakespeare", clean, num_proc=1, progress=False)
    with cf.ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        pending: list[Any] = []
        for fault in [c for c in CASES if only is None or c in only]:
            if fault in DAMAGE:
                pending.append(pool.submit(damaged_case(fault, clean, scratch, rng)))
            elif fault == RESUME_CASE:
                own = np.random.default_rng(rng.integers(1 << 63))  # drawn now, used later
                pending.append(pool.submit(resume_case, clean, scratch, own))
            else:
                pending.append(prepare_case(clean, scratch, rng, pool))
        return [p.result() if isinstance(p, cf.Future) else p() for p in pending]
