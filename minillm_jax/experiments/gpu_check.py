"""One-command acceptance check of an accelerator: speed, memory and numerics of the real steps.

    python -m minillm_jax.experiments.gpu_check [--out runs/gpu_check] [--budget-s 450] [--steps 10]
    python tools/gpu_check.py ...   (the same)

It always leaves a report: DIR/gpu_check.json and DIR/gpu_check.md are written right after the
environment probe and rewritten (atomically: a temporary file, then a rename) before and after
every cell, so a crash, an out-of-memory kill or a timeout keeps everything measured so far.

Cells, most important first, each in its own process (compiled, then timed, alone on the device;
a crash or OOM ends only that cell, and the process's peak device memory is the cell's):
  1. configs/best_fused.py as configured   2. configs/best.py as configured
  3. configs/modern.py as configured       4. the bf16-vs-float32 loss gap (configs/demo.py)
  5+. variants of best_fused.py: unrolled layers, plain (unchunked) loss, XLA attention, cuDNN
      attention with unrolled layers; best.py unrolled.
`--cells 1,4` runs a subset (same numbers).
On a CPU the same runs on a reduced model (2 x 64, seq 32, batch 4, float32), so CI exercises it.

Per cell: compile time, step time, tokens/s, MFU (minillm_jax.train.mfu: exact device-kind peak; on a
CPU a timed float32 matmul), the measured peak device memory of the cell's process
(`memory_stats()["peak_bytes_in_use"]`; "n/a" where the backend has none, e.g. CPU) beside XLA's
estimate, and whether the compiled HLO holds cuDNN's fused-attention custom call. Compilation
uses its own cache (DIR/xla_cache, autotuning results included: JAX keeps XLA's per-fusion
autotune cache under the compilation cache directory), never the training runs' cache.

Budget: a cell starts only with time left and is killed when the budget runs out; cells not run
are recorded as skipped with the reason. The default 450 s leaves margin under 8 minutes.

Exit status 1 with one line saying why when: the first cell did not finish; a cell chose cuDNN
attention but its compiled HLO has no `__cudnn$fmha` custom call; the bf16 loss gap is above its
bound (loss_gap_bound). Otherwise 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from minillm_jax.experiments.children import child_env
from minillm_jax.experiments.gpu_cells import (CUDNN_CALL, GAP, Cell, child, cpu_cells, gpu_cells,
                                   write_atomic)

MIN_START_S = 15.0  # a cell is not started with less time than this left
FAULTS = ("raise", "exit", "hang")  # --fault kinds, for tests of the report's durability


# -------------------------------------------------------------------------------------------
# The parent: runs each cell in a child process, keeps the report on disk


def save_report(out: str, report: dict[str, Any]) -> None:
    write_atomic(os.path.join(out, "gpu_check.json"), json.dumps(report, indent=1, default=str))
    write_atomic(os.path.join(out, "gpu_check.md"), markdown(report))


def run_cells(cells: list[Cell], launch: Callable[[Cell, float], dict[str, Any]],
              budget_s: float, save: Callable[[], None],
              clock: Callable[[], float] = time.monotonic) -> None:
    """Runs the cells in order within `budget_s` (measured by `clock` from now), saving after
    every change. `launch(cell, timeout_s)` returns the cell's result or raises TimeoutError."""
    start = clock()
    for cell in cells:
        left = budget_s - (clock() - start)
        if left < MIN_START_S:
            cell.result = {"status": "skipped",
                           "error": f"budget spent ({clock() - start:.0f} of {budget_s:.0f} s)"}
            save()
            continue
        cell.result = {"status": "running"}
        save()
        began = clock()
        try:
            cell.result = launch(cell, left)
        except TimeoutError:
            cell.result = {"status": "skipped",
                           "error": f"did not finish within the budget (stopped after "
                                    f"{clock() - began:.0f} s)"}
        cell.result.setdefault("wall_s", clock() - began)
        save()


def _child_launcher(out: str, env: dict[str, Any], steps: int, gap_steps: int, cache: str,
                    fault: tuple[int, str] | None) -> Callable[[Cell, float], dict[str, Any]]:
    logs = os.path.join(out, "logs")
    os.makedirs(logs, exist_ok=True)

    def launch(cell: Cell, timeout_s: float) -> dict[str, Any]:
        index = cell.number
        task = {"cell": dataclasses.asdict(cell), "steps": steps, "gap_steps": gap_steps,
                "cache": cache, "peak": env.get("peak_flops"),
                "cpu": env.get("platform") == "cpu",
                "fault": fault[1] if fault and fault[0] == index else ""}
        result_path = os.path.join(out, "logs", f"cell{index}.result.json")
        if os.path.exists(result_path):
            os.remove(result_path)
        log_path = os.path.join(logs, f"cell{index}.log")
        return _run_child(task, result_path, log_path, timeout_s)

    return launch


def _run_child(task: dict[str, Any], result_path: str, log_path: str,
               timeout_s: float) -> dict[str, Any]:
    """Runs one task in `python -m minillm_jax.experiments.gpu_check --child`; its result, or why not."""
    command = [sys.executable, "-m", "minillm_jax.experiments.gpu_check", "--child", json.dumps(task),
               "--result", result_path]
    with open(log_path, "w") as log:  # the caller's directory: relative paths mean the same
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=child_env())
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise TimeoutError from None
    if os.path.exists(result_path):
        with open(result_path) as f:
            return json.load(f)
    tail = Path(log_path).read_text(errors="replace").strip().splitlines()[-3:]
    why = "killed by signal %d" % -code if code < 0 else f"exit status {code}"
    if code in (-9, 137):
        why += " (out of host memory?)"
    return {"status": "failed", "error": f"the cell's process ended with no result: {why}: "
                                         + " | ".join(tail)[-300:]}


def verdict(report: dict[str, Any]) -> tuple[bool, str]:
    """(passed, one line saying why not / what passed)."""
    cells = [c for c in report["cells"] if c["name"] != GAP]
    first = cells[0] if cells else None
    if first is not None and first["result"].get("status") != "ok":
        r = first["result"]
        return False, (f"the first cell ({first['name']}) did not finish: "
                       f"{r.get('status', 'not run')}: {r.get('error', '')}")
    for cell in cells:
        r = cell["result"]
        if r.get("status") == "ok" and r.get("attention_used") == "cudnn" and not r.get(
                "cudnn_in_hlo"):
            return False, (f"{cell['name']}: cuDNN attention was chosen but its compiled HLO has "
                           f"no {CUDNN_CALL} custom call")
    gap = next((c["result"] for c in report["cells"] if c["name"] == GAP), {})
    if gap.get("status") == "ok" and not gap["within_bound"]:
        return False, (f"bf16 vs float32 loss gap {gap['gap']:.4f} is above its bound "
                       f"{gap['bound']:.4f} ({gap['bound_fraction']:.1%} of the float32 loss "
                       f"decrease {gap['decrease']:.4f} over {gap['steps']} steps)")
    done = sum(c["result"].get("status") == "ok" for c in report["cells"])
    note = "" if gap.get("status") == "ok" else f"; loss gap {gap.get('status', 'not run')}"
    return True, f"{done} of {len(report['cells'])} cells ok{note}"


def run_check(out: str, budget_s: float, steps: int, gap_steps: int, cache: str = "",
              fault: tuple[int, str] | None = None, only: tuple[int, ...] = ()
              ) -> dict[str, Any]:
    started = time.monotonic()
    out = os.path.abspath(out)  # the caller's directory, for the children too
    os.makedirs(out, exist_ok=True)
    if not cache:
        cache = os.path.join(out, "xla_cache")
    elif cache != "off":
        cache = os.path.abspath(cache)
    report: dict[str, Any] = {
        "status": "probing the environment", "budget_s": budget_s, "steps": steps,
        "environment": {"python": platform.python_version(), "host": platform.node(),
                        "xla_flags": os.environ.get("XLA_FLAGS", "")},
        "cells": [], "compilation_cache": cache}
    save_report(out, report)
    probe = _run_child({"probe": True, "cache": cache}, os.path.join(out, "probe.json"),
                       os.path.join(out, "probe.log"), max(budget_s, 60.0))
    if probe.get("status") == "failed":
        report.update(status="failed", verdict={"passed": False, "reason":
                      f"the environment probe failed: {probe['error']}"})
        save_report(out, report)
        return report
    report["environment"].update(probe)
    env = report["environment"]
    print(json.dumps(env), flush=True)
    cpu = env["platform"] == "cpu"
    cells = cpu_cells() if cpu else gpu_cells()
    report["base"] = ("reduced configs (2 x 64, seq 32, batch 4, float32) on CPU" if cpu
                      else "configs as they are")
    report["status"] = "running"

    def save() -> None:
        report["cells"] = [dataclasses.asdict(c) for c in cells]
        report["wall_s"] = time.monotonic() - started
        save_report(out, report)

    if only:
        unknown = sorted(set(only) - {c.number for c in cells})
        if unknown:
            raise SystemExit(f"error: --cells {unknown}: there are cells 1..{len(cells)} here")
        cells = [c for c in cells if c.number in only]
    launch = _child_launcher(out, env, steps, gap_steps, cache, fault)

    def announced(cell: Cell, timeout_s: float) -> dict[str, Any]:
        print(f"{cell.name}: running (up to {timeout_s:.0f} s)", flush=True)
        result = launch(cell, timeout_s)
        print(f"{cell.name}: {result.get('status')} {summary(result)}", flush=True)
        return result

    run_cells(cells, announced, budget_s - (time.monotonic() - started), save)
    save()
    passed, reason = verdict(report)
    report.update(status="done", verdict={"passed": passed, "reason": reason})
    save()
    return report


def summary(r: dict[str, Any]) -> str:
    if "step_ms" in r:
        return (f"{r['step_ms']:.1f} ms/step, {r['tokens_per_s']:,.0f} tok/s, "
                f"{_mfu(r)}, compile {r['compile_s']:.0f} s")
    if "gap" in r:
        return f"gap {r['gap']:.4f} (bound {r['bound']:.4f})"
    return r.get("error", "")


def _mfu(r: dict[str, Any]) -> str:
    return "MFU n/a" if r.get("mfu") is None else f"MFU {r['mfu']:.1%}"


def _predicted(result: dict[str, Any]) -> str:
    """The roofline's predicted step (minillm_jax/experiments/aot) and measured / predicted."""
    if result.get("predicted_step_ms") is None:
        return "n/a"
    return (f"{result['predicted_step_ms']:.1f} "
            f"({result['measured_over_predicted']:.2f}x)")


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    versions = env.get("versions", {})
    lines = [f"### {env.get('device', '?')} x{env.get('devices', '?')} "
             f"({env.get('platform', '?')}), jax {versions.get('jax', '?')}, "
             f"{report.get('base', '')}", ""]
    if "peak_source" in env:
        peak = env.get("peak_flops")
        lines += [("Peak for MFU: " + (f"{peak / 1e12:.3g} TFLOP/s per device "
                                      f"({env['peak_source']})" if peak else
                                      f"n/a ({env['peak_source']}): MFU n/a"))
                  + (f"; measured bf16 matmul {env['matmul_tflops']:.0f} TFLOP/s"
                     if env.get("matmul_tflops") else ""), ""]
    lines += ["| cell | attention | compile s | step ms | predicted ms (ratio) | tokens/s | MFU "
              "| peak memory GiB | XLA estimate GiB | cuDNN in HLO | status |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    gap = None
    for cell in report["cells"]:
        r = cell["result"]
        if cell["name"] == GAP:
            gap = r
            continue
        ok = r.get("status") == "ok"

        def num(key: str, fmt: str, r: dict = r, ok: bool = ok) -> str:
            return fmt.format(r[key]) if ok and r.get(key) is not None else ""

        status = r.get("status", "not run")
        if status not in ("ok", "running", "not run"):
            status = f"{status}: {r.get('error', '')[:100]}"
        memory = (num("peak_memory_gib", "{:.2f}") or ("n/a" if ok else ""))
        lines.append(f"| {cell['name']} | {r.get('attention_used', '')} | "
                     f"{num('compile_s', '{:.0f}')} | {num('step_ms', '{:.1f}')} | "
                     f"{_predicted(r) if ok else ''} | "
                     f"{num('tokens_per_s', '{:,.0f}')} | "
                     f"{(_mfu(r)[4:] if ok else '')} | {memory} | "
                     f"{num('xla_estimate_gib', '{:.2f}')} | {num('cudnn_in_hlo', '{}')} | "
                     f"{status} |")
    if gap and gap.get("status") == "ok":
        lines += ["", f"bf16 vs float32, {gap['steps']} steps of configs/demo.py"
                  f"{' (reduced)' if env.get('platform') == 'cpu' else ''}, same batches: "
                  f"final-window loss {gap['final_f32']:.4f} (float32) vs {gap['final_bf16']:.4f}"
                  f" (bf16), gap {gap['gap']:.4f}; bound {gap['bound']:.4f} = "
                  f"{gap['bound_fraction']:.1%} of the float32 loss decrease {gap['decrease']:.4f}"
                  f" ({'within' if gap['within_bound'] else 'ABOVE'})"]
    elif gap:
        lines += ["", f"bf16 vs float32 loss gap: {gap.get('status', 'not run')} "
                      f"{gap.get('error', '')}".rstrip()]
    if "verdict" in report:
        v = report["verdict"]
        lines += ["", f"Verdict: {'PASS' if v['passed'] else 'FAIL'}: {v['reason']}"]
    lines += ["", f"Total {report.get('wall_s', 0):.0f} s ({report.get('status', '')})."]
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------


def _numbers(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError("expected cell numbers such as 1,2,4") from None


def _fault(value: str) -> tuple[int, str]:
    index, _, kind = value.partition(":")
    if not index.isdigit() or kind not in FAULTS:
        raise argparse.ArgumentTypeError(f"expected CELL:KIND with KIND in {FAULTS}")
    return int(index), kind


def main(argv: list[str] | None = None) -> int:
    from minillm_jax import deps

    deps.require()  # first: one line, not a traceback, on an image that lacks a package
    parser = argparse.ArgumentParser(prog="python -m minillm_jax.experiments.gpu_check",
                                     description=__doc__.strip().splitlines()[0])
    parser.add_argument("--out", default="runs/gpu_check", help="where the JSON and table go")
    parser.add_argument("--budget-s", type=float, default=450.0,
                        help="wall-clock budget; cells that cannot run in it are skipped")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per cell")
    parser.add_argument("--gap-steps", type=int, default=100,
                        help="steps of the bf16-vs-float32 demo comparison")
    parser.add_argument("--cache-dir", default="",
                        help="compilation cache of the check (default OUT/xla_cache; off: none)")
    parser.add_argument("--cells", type=_numbers, default=(), metavar="N,N,...",
                        help="run only these cells (1-based, in the order above)")
    parser.add_argument("--fault", type=_fault, default=None, metavar="CELL:KIND",
                        help="testing: make cell CELL (1-based) raise, exit or hang")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(json.loads(args.child), args.result)
    if args.steps < 1 or args.gap_steps < 2:
        parser.error("--steps must be >= 1 and --gap-steps >= 2")
    report = run_check(args.out, args.budget_s, args.steps, args.gap_steps, args.cache_dir,
                       args.fault, args.cells)
    print(markdown(report), flush=True)
    v = report["verdict"]
    print(f"gpu_check: {'PASS' if v['passed'] else 'FAIL'}: {v['reason']}", flush=True)
    return 0 if v["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
