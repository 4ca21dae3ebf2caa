"""One-command acceptance check of an accelerator: speed, memory and numerics of the real steps.

    python -m minillm_jax.gpu_check [--out runs/gpu_check] [--budget-s 450] [--steps 10]
    python tools/gpu_check.py ...   (the same)

On a GPU it measures configs/best_fused.py (the 166M recipe, batch 66, seq 512, bfloat16) for
each of {XLA, cuDNN attention} x {scan, unrolled layers} x {chunked loss on, off}, plus the recipe
as configs/best.py has it (attention dropout on the rematerialised XLA path) and without any
dropout; then the bfloat16-vs-float32 loss gap over 100 steps of configs/demo.py. On a CPU it
runs a reduced subset (a small model, XLA attention only, 10 demo steps), so CI exercises it.

Per cell: step time, tokens/s, MFU against the device's published bf16 dense peak (the CPU's is a
timed matmul), XLA's memory estimate, whether the compiled HLO contains the cuDNN attention
custom call, and compile time. Compiles run in parallel threads (XLA releases the GIL), then
cells are timed one at a time. A cell that fails is recorded with its error; cells that cannot
finish inside --budget-s are recorded as skipped. Writes gpu_check.json and gpu_check.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CUDNN_CALL = "cudnn$fmha"  # custom-call target prefix of cuDNN's fused attention in XLA's HLO


@dataclasses.dataclass
class Cell:
    name: str
    overrides: dict[str, Any]
    result: dict[str, Any] = dataclasses.field(default_factory=dict)


def gpu_cells() -> tuple[str, list[Cell]]:
    cells = []
    for attention in ("xla", "cudnn"):
        for scan in (True, False):
            for chunk in (4096, 0):
                name = (f"{attention} {'scan' if scan else 'unrolled'} "
                        f"{'chunked' if chunk else 'plain'} loss")
                cells.append(Cell(name, dict(attention_impl=attention, scan_layers=scan,
                                             loss_chunk_size=chunk)))
    cells.append(Cell("best.py: attention dropout 0.05 (remat XLA), unrolled, chunked",
                      dict(attention_dropout=-1.0, scan_layers=False)))
    cells.append(Cell("no dropout at all, auto attention, unrolled, chunked",
                      dict(dropout=0.0, scan_layers=False)))
    return "best_fused.py", cells


def cpu_cells() -> tuple[str, list[Cell]]:
    small = dict(n_layer=2, n_embd=64, n_head=4, sequence_length=32, batch_size=4,
                 compute_dtype="float32")
    cells = [Cell("xla scan chunked loss", dict(small, attention_impl="xla", scan_layers=True,
                                                 loss_chunk_size=64)),
             Cell("xla unrolled plain loss", dict(small, attention_impl="xla", scan_layers=False,
                                                   loss_chunk_size=0))]
    return "best_fused.py (reduced: 2 x 64, seq 32, batch 4, float32)", cells


def _config(overrides: dict[str, Any]):
    from minillm_jax.config import build_config, load_config

    config = load_config(REPO / "configs" / "best_fused.py")
    config.update(overrides)
    return build_config(config, "gpu_check")


def _compile(cell: Cell) -> Any:
    """Lowers the cell's train step (tracing, in the calling thread)."""
    from minillm_jax.build import build_run

    config = _config(cell.overrides)
    run = build_run(config)
    cell.result.update(attention_used=run.attention.impl, attention_reason=run.attention.reason)
    return run, run.lower_train_step()


def _time_cell(cell: Cell, run: Any, compiled: Any, steps: int, peak: float) -> None:
    import jax
    import numpy as np

    from minillm_jax import memory
    from minillm_jax.benchmark import model_flops_per_token

    config = run.config
    state = run.init_state()
    shape = run.batch_shape
    tokens = np.random.default_rng(0).integers(0, 50257, (shape[0], shape[1], shape[2] + 1))
    batch = jax.device_put({"x": tokens[..., :-1].astype(np.int32),
                            "y": tokens[..., 1:].astype(np.int32)}, run.batch_sharding)
    horizon = run.horizon(config.run.iterations)
    for _ in range(3):
        state, metrics = compiled(state, batch, horizon)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = compiled(state, batch, horizon)
    jax.block_until_ready(metrics)
    step_s = (time.perf_counter() - start) / steps
    tokens_per_step = int(np.prod(shape))
    fpt = model_flops_per_token(config, run.abstract_state.params)
    cell.result.update(
        status="ok", step_ms=1000 * step_s, tokens_per_s=tokens_per_step / step_s,
        mfu=tokens_per_step * fpt / step_s / peak, loss=float(metrics["loss"]),
        memory_gib=(memory.step_bytes(compiled) or 0) / 2**30,
        cudnn_in_hlo=CUDNN_CALL in compiled.as_text(), flops_per_token=fpt)
    del state, metrics, batch


def loss_gap(steps: int, cpu: bool) -> dict[str, Any]:
    """bf16 (float32 residual) vs float32 per-step training losses on the demo corpus."""
    from minillm_jax.benchmark import train_losses
    from minillm_jax.config import load_config

    config = load_config(REPO / "configs" / "demo.py")
    config.update(dict(iterations=steps, dropout=0.0))
    if cpu:
        config.update(dict(n_layer=2, sequence_length=32, batch_size=4))
    f32 = train_losses(config.copy_and_resolve_references(), steps)
    config.compute_dtype = "bfloat16"
    bf16 = train_losses(config, steps)
    gaps = [abs(a - b) / a for a, b in zip(f32, bf16)]
    return {"steps": steps, "max_rel_gap": max(gaps), "final_f32": f32[-1], "final_bf16": bf16[-1],
            "first": f32[0], "mean_rel_gap": sum(gaps) / len(gaps)}


def environment() -> dict[str, Any]:
    import jax

    from minillm_jax.benchmark import peak_flops

    device = jax.devices()[0]
    versions = {}
    for name in ("jax", "jaxlib", "flax", "optax", "numpy"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - report what is there
            versions[name] = "missing"
    # the CPU cells run in float32, measured against a timed float32 matmul
    peak, source = peak_flops("float32" if device.platform == "cpu" else "bfloat16")
    return {"device": device.device_kind, "platform": device.platform,
            "devices": jax.device_count(), "python": platform.python_version(),
            "versions": versions, "peak_flops": peak, "peak_source": source,
            "xla_flags": os.environ.get("XLA_FLAGS", "")}


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


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [f"### {env['device']} x{env['devices']} ({env['platform']}), "
             f"jax {env['versions']['jax']}, {report['base']}",
             "",
             f"Peak for MFU: {env['peak_flops'] / 1e12:.3g} TFLOP/s ({env['peak_source']})"
             + (f"; measured bf16 matmul: {report['matmul_tflops']:.0f} TFLOP/s"
                if report.get("matmul_tflops") else ""),
             "",
             "| cell | attention | step ms | tokens/s | MFU | XLA memory GiB | cuDNN in HLO "
             "| compile s | status |",
             "|---|---|---|---|---|---|---|---|---|"]
    for cell in report["cells"]:
        r = cell["result"]
        ok = r.get("status") == "ok"

        def num(key: str, fmt: str, r: dict = r, ok: bool = ok) -> str:
            return fmt.format(r[key]) if ok and key in r else ""

        status = r.get("status", "")
        if status not in ("ok", ""):
            status = f"{status}: {r.get('error', '')[:80]}"
        lines.append(f"| {cell['name']} | {r.get('attention_used', '')} | "
                     f"{num('step_ms', '{:.1f}')} | {num('tokens_per_s', '{:,.0f}')} | "
                     f"{num('mfu', '{:.1%}')} | {num('memory_gib', '{:.2f}')} | "
                     f"{num('cudnn_in_hlo', '{}')} | "
                     f"{r['compile_s']:.0f} | {status} |" if "compile_s" in r else
                     f"| {cell['name']} | {r.get('attention_used', '')} | | | | | | | {status} |")
    gap = report.get("loss_gap")
    if gap:
        lines += ["", f"bf16 vs float32, {gap['steps']} steps of configs/demo.py"
                  f"{' (reduced)' if env['platform'] == 'cpu' else ''}: max relative loss gap "
                  f"{gap['max_rel_gap']:.2%} (mean {gap['mean_rel_gap']:.2%}); final loss "
                  f"{gap['final_f32']:.4f} (float32) vs {gap['final_bf16']:.4f} (bf16)"]
    lines += ["", f"Total {report['wall_s']:.0f} s."]
    return "\n".join(lines) + "\n"


def run_check(out: str, budget_s: float, steps: int, gap_steps: int | None) -> dict[str, Any]:
    import jax

    from minillm_jax.build import enable_compilation_cache

    started = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    env = environment()
    cpu = env["platform"] == "cpu"
    print(json.dumps(env), flush=True)
    enable_compilation_cache("")
    base, cells = cpu_cells() if cpu else gpu_cells()
    steps = min(steps, 2) if cpu else steps
    report: dict[str, Any] = {"environment": env, "base": base, "cells": [], "steps": steps}
    if not cpu:
        report["matmul_tflops"] = matmul_rate() / 1e12

    def save() -> None:
        report["cells"] = [dataclasses.asdict(c) for c in cells]
        report["wall_s"] = time.perf_counter() - started
        with open(os.path.join(out, "gpu_check.json"), "w") as f:
            json.dump(report, f, indent=1, default=str)
        with open(os.path.join(out, "gpu_check.md"), "w") as f:
            f.write(markdown(report))

    lowered = {}
    for cell in cells:  # tracing is Python: one thread
        try:
            lowered[cell.name] = _compile(cell)
        except Exception as err:  # noqa: BLE001 - one bad cell must not end the check
            cell.result.update(status="failed", error=f"{type(err).__name__}: {err}")
            traceback.print_exc()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=4 if not cpu else 2)

    def compile_one(name: str) -> tuple[Any, float]:
        start = time.perf_counter()
        return lowered[name][1].compile(), time.perf_counter() - start

    futures = {name: pool.submit(compile_one, name) for name in lowered}
    gap_s = 60.0 if gap_steps else 0.0  # time kept for the loss-gap run
    for cell in cells:
        if cell.name not in futures:
            continue
        left = budget_s - gap_s - (time.perf_counter() - started)
        try:
            compiled, compile_s = futures[cell.name].result(timeout=max(left, 1.0))
        except concurrent.futures.TimeoutError:
            cell.result.update(status="skipped", error="compile did not finish within the budget")
            continue
        except Exception as err:  # noqa: BLE001
            cell.result.update(status="failed", error=f"{type(err).__name__}: {err}")
            continue
        cell.result["compile_s"] = compile_s
        if budget_s - gap_s - (time.perf_counter() - started) < 10 * steps * 0.5 + 10:
            cell.result.update(status="skipped", error="no time left to time it")
            continue
        try:
            _time_cell(cell, lowered[cell.name][0], compiled, steps, env["peak_flops"])
        except Exception as err:  # noqa: BLE001
            cell.result.update(status="failed", error=f"{type(err).__name__}: {err}")
            traceback.print_exc()
        r = cell.result
        print(f"{cell.name}: {r.get('status')} {r.get('step_ms', 0):.1f} ms/step "
              f"{r.get('tokens_per_s', 0):,.0f} tok/s MFU {r.get('mfu', 0):.1%} "
              f"cudnn={r.get('cudnn_in_hlo')} compile {r.get('compile_s', 0):.0f}s", flush=True)
        del compiled
        save()
    if gap_steps:
        try:
            report["loss_gap"] = loss_gap(gap_steps if not cpu else min(gap_steps, 10), cpu)
        except Exception as err:  # noqa: BLE001
            report["loss_gap_error"] = f"{type(err).__name__}: {err}"
            traceback.print_exc()
    stats = jax.devices()[0].memory_stats() or {}
    report["peak_bytes_in_use"] = stats.get("peak_bytes_in_use")
    save()
    pool.shutdown(wait=False, cancel_futures=True)
    jax.clear_caches()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minillm_jax.gpu_check",
                                     description=__doc__.strip().splitlines()[0])
    parser.add_argument("--out", default="runs/gpu_check", help="where the JSON and table go")
    parser.add_argument("--budget-s", type=float, default=450.0,
                        help="wall-clock budget; cells that cannot finish in it are skipped")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per cell")
    parser.add_argument("--gap-steps", type=int, default=100,
                        help="steps of the bf16-vs-float32 demo comparison (0: skip it)")
    args = parser.parse_args(argv)
    report = run_check(args.out, args.budget_s, args.steps, args.gap_steps)
    print(markdown(report), flush=True)
    sys.stdout.flush()
    return 0 if any(c["result"].get("status") == "ok" for c in report["cells"]) else 1


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # compiles still running in pool threads must not hold the exit
