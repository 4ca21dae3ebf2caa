"""One-command acceptance check of an accelerator: speed, memory and numerics of the real steps.

    python -m minillm_jax.gpu_check [--out runs/gpu_check] [--budget-s 450] [--steps 10]
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

Per cell: compile time, step time, tokens/s, MFU (minillm_jax.mfu: exact device-kind peak; on a
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
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
CUDNN_CALL = "__cudnn$fmha"  # custom-call targets of cuDNN fused attention (fmhaSoftmax...)
U_BF16 = 2.0**-8  # bfloat16's relative precision (8 significant bits)
GAP = "loss gap"
MIN_START_S = 15.0  # a cell is not started with less time than this left
FAULTS = ("raise", "exit", "hang")  # --fault kinds, for tests of the report's durability


@dataclasses.dataclass
class Cell:
    """A unit of the check: a train step of `config` with `overrides`, or the loss gap."""

    name: str
    config: str  # file under configs/ ("" for the loss gap)
    overrides: dict[str, Any]
    result: dict[str, Any] = dataclasses.field(default_factory=dict)
    number: int = 0  # 1-based position in the full list (--cells, --fault)

    @property
    def is_gap(self) -> bool:
        return self.name == GAP


REDUCED = dict(n_layer=2, n_embd=64, n_head=4, sequence_length=32, batch_size=4, acc_steps=1,
               compute_dtype="float32", loss_chunk_size=64)


def _numbered(cells: list[Cell]) -> list[Cell]:
    for number, cell in enumerate(cells, 1):
        cell.number = number
    return cells


def gpu_cells() -> list[Cell]:
    return _numbered([Cell("best_fused.py as configured", "best_fused.py", {}),
            Cell("best.py as configured", "best.py", {}),
            Cell("modern.py as configured", "modern.py", {}),
            Cell(GAP, "", {}),
            Cell("best_fused.py unrolled", "best_fused.py", dict(scan_layers=False)),
            Cell("best_fused.py plain loss", "best_fused.py", dict(loss_chunk_size=0)),
            Cell("best_fused.py XLA attention", "best_fused.py", dict(attention_impl="xla")),
            Cell("best_fused.py cuDNN attention, unrolled", "best_fused.py",
                 dict(attention_impl="cudnn", scan_layers=False)),
            Cell("best.py unrolled", "best.py", dict(scan_layers=False))])


def cpu_cells() -> list[Cell]:
    return _numbered([Cell("best_fused.py reduced", "best_fused.py", dict(REDUCED)),
            Cell("best.py reduced", "best.py", dict(REDUCED)),
            Cell(GAP, "", {}),
            Cell("best_fused.py reduced, unrolled, plain loss", "best_fused.py",
                 dict(REDUCED, scan_layers=False, loss_chunk_size=0))])


def cudnn_in_hlo(hlo_text: str) -> bool:
    """Whether (compiled or lowered) HLO text calls cuDNN's fused attention."""
    return CUDNN_CALL in hlo_text


def loss_gap_bound(steps: int) -> float:
    """Largest allowed |bf16 - float32| final-window loss gap, as a fraction of the float32
    run's loss decrease over `steps` steps from the same initialisation on the same batches.

    Derivation: a bf16 step rounds every matmul operand to 8 significant bits (relative error at
    most u/2 each, u = 2^-8) and accumulates in float32, so each step's update differs from the
    float32 one by a relative error of order u. If those errors added up with no cancellation at
    all over S steps, the progress made would differ by at most S*u of itself. The bound is that
    worst case, capped at one half: S = 100 allows 39% of the loss decrease, S = 10 allows 3.9%.
    A bf16 path that does not train (gap = the whole decrease) or trains materially worse fails.
    """
    return min(steps * U_BF16, 0.5)


# -------------------------------------------------------------------------------------------
# The parent: runs each cell in a child process, keeps the report on disk


def write_atomic(path: str, text: str) -> None:
    """Writes `text` so that a reader (or a kill) never sees a half-written file."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


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
    """Runs one task in `python -m minillm_jax.gpu_check --child`; its result, or why not."""
    command = [sys.executable, "-m", "minillm_jax.gpu_check", "--child", json.dumps(task),
               "--result", result_path]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
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
    os.makedirs(out, exist_ok=True)
    cache = cache or os.path.join(os.path.abspath(out), "xla_cache")
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
    lines += ["| cell | attention | compile s | step ms | tokens/s | MFU | peak memory GiB "
              "| XLA estimate GiB | cuDNN in HLO | status |",
              "|---|---|---|---|---|---|---|---|---|---|"]
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
# The child: one cell, compiled and timed alone in a fresh process


def _probe(cache: str) -> dict[str, Any]:
    import jax

    from minillm_jax import mfu
    from minillm_jax.benchmark import measure_matmul_peak

    device = jax.devices()[0]
    versions = {}
    for name in ("jax", "jaxlib", "flax", "optax", "numpy", "jax_cuda12_plugin",
                 "jax_cuda13_plugin"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - report what is there
            versions[name] = "missing"
    env: dict[str, Any] = {"device": device.device_kind, "platform": device.platform,
                           "devices": jax.device_count(), "versions": versions}
    if device.platform == "cpu":  # the CPU cells run in float32: a timed float32 matmul
        env.update(peak_flops=measure_matmul_peak(n=512, repeats=3),
                   peak_source=f"measured float32 matmul on {device.device_kind}")
    else:
        peak = mfu.device_peak(device)
        env.update(peak_flops=peak.flops, peak_source=peak.source)
        _set_cache(cache)
        env["matmul_tflops"] = matmul_rate() / 1e12
        stats = device.memory_stats() or {}
        env["memory_limit_gib"] = stats.get("bytes_limit", 0) / 2**30 or None
    return env


def matmul_rate() -> float:
    """Achieved bf16 matmul FLOP/s (8192^3 on random data) on an accelerator."""
    import jax
    import jax.numpy as jnp

    n = 8192
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.bfloat16)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.bfloat16)
    f = jax.jit(lambda a, b: a @ b)
    f(a, b).block_until_ready()
    start = time.perf_counter()
    for _ in range(10):
        out = f(a, b)
    out.block_until_ready()
    return 2 * n**3 * 10 / (time.perf_counter() - start)


def _set_cache(cache: str) -> None:
    import jax

    if cache != "off":
        os.makedirs(cache, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", cache)


def _time_cell(cell: dict[str, Any], steps: int, peak: float | None) -> dict[str, Any]:
    import jax
    import numpy as np

    from minillm_jax import memory, mfu
    from minillm_jax.build import build_run
    from minillm_jax.config import build_config, load_config

    config = load_config(REPO / "configs" / cell["config"])
    config.update(cell["overrides"])
    run = build_run(build_config(config, "gpu_check"))
    result: dict[str, Any] = {"attention_used": run.attention.impl,
                              "attention_reason": run.attention.reason,
                              "compute_dtype": run.config.execution.compute_dtype}
    start = time.perf_counter()
    compiled = run.compile_train_step()
    result["compile_s"] = time.perf_counter() - start
    result["cudnn_in_hlo"] = cudnn_in_hlo(compiled.as_text())
    result["xla_estimate_gib"] = (memory.step_bytes(compiled) or 0) / 2**30 or None
    state = run.init_state()
    shape = run.batch_shape
    vocab = min(run.config.model.vocab_size, 50257)
    tokens = np.random.default_rng(0).integers(0, vocab, (shape[0], shape[1], shape[2] + 1))
    batch = jax.device_put({"x": tokens[..., :-1].astype(np.int32),
                            "y": tokens[..., 1:].astype(np.int32)}, run.batch_sharding)
    horizon = run.horizon(run.config.run.iterations)
    for _ in range(2):
        state, metrics = compiled(state, batch, horizon)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = compiled(state, batch, horizon)
    jax.block_until_ready(metrics)
    step_s = (time.perf_counter() - start) / steps
    tokens_per_step = int(np.prod(shape))
    fpt = mfu.model_flops_per_token(run.abstract_state.params, run.config.model)
    tps = tokens_per_step / step_s
    stats = jax.devices()[0].memory_stats()
    result.update(
        status="ok", step_ms=1000 * step_s, tokens_per_s=tps, tokens_per_step=tokens_per_step,
        flops_per_token=fpt, devices=jax.device_count(),
        mfu=mfu.mfu(tps, fpt, peak, jax.device_count()), loss=float(metrics["loss"]),
        peak_memory_gib=(stats["peak_bytes_in_use"] / 2**30
                         if stats and "peak_bytes_in_use" in stats else None),
        peak_memory_source=("memory_stats peak_bytes_in_use of this cell's process"
                            if stats and "peak_bytes_in_use" in stats else
                            f"n/a: the {jax.devices()[0].platform} backend reports no memory "
                            "stats"))
    return result


def loss_gap(steps: int, cpu: bool) -> dict[str, Any]:
    """bf16 (float32 residual) vs float32 training losses on the demo corpus, same batches and
    initialisation, compared over the final window against loss_gap_bound."""
    from minillm_jax.benchmark import train_losses
    from minillm_jax.config import load_config

    config = load_config(REPO / "configs" / "demo.py")
    config.update(dict(iterations=steps, dropout=0.0, compute_dtype="float32"))
    if cpu:
        config.update(dict(n_layer=2, sequence_length=32, batch_size=4))
    f32 = train_losses(config.copy_and_resolve_references(), steps)
    config.compute_dtype = "bfloat16"
    bf16 = train_losses(config, steps)
    window = max(1, steps // 5)
    final_f32, final_bf16 = sum(f32[-window:]) / window, sum(bf16[-window:]) / window
    decrease = f32[0] - final_f32
    fraction = loss_gap_bound(steps)
    gap = abs(final_bf16 - final_f32)
    return {"status": "ok", "steps": steps, "window": window, "first_f32": f32[0],
            "final_f32": final_f32, "final_bf16": final_bf16, "decrease": decrease,
            "gap": gap, "bound_fraction": fraction, "bound": fraction * max(decrease, 0.0),
            "within_bound": decrease > 0 and gap <= fraction * decrease,
            "losses_f32": f32, "losses_bf16": bf16}


def child(task: dict[str, Any], result_path: str) -> int:
    """Runs one task and writes its result (an exception becomes a 'failed' result)."""
    fault = task.get("fault", "")
    try:
        if task.get("probe"):
            result = _probe(task["cache"])
        else:
            if fault == "hang":
                time.sleep(10**6)
            if fault == "exit":
                os._exit(137)  # what an out-of-memory kill looks like
            if fault == "raise":
                raise RuntimeError("simulated fault (--fault)")
            _set_cache(task["cache"])
            cell = task["cell"]
            result = (loss_gap(task["gap_steps"], task["cpu"]) if cell["name"] == GAP else
                      _time_cell(cell, task["steps"], task["peak"]))
    except Exception as err:  # noqa: BLE001 - one bad cell must not end the check
        import traceback

        traceback.print_exc()
        result = {"status": "failed", "error": f"{type(err).__name__}: {err}"[:2000]}
    write_atomic(result_path, json.dumps(result, default=str))
    return 0


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
    parser = argparse.ArgumentParser(prog="python -m minillm_jax.gpu_check",
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
