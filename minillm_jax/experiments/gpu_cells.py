"""What `gpu_check` measures: its cells (most important first), the checks on their results, and
the child side that compiles and times one cell alone in a fresh process
(`python -m minillm_jax.experiments.gpu_check --child TASK`). The parent, its report and verdict are in
minillm_jax/experiments/gpu_check.py.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import os
import time
from pathlib import Path
from typing import Any

CUDNN_CALL = "__cudnn$fmha"  # custom-call targets of cuDNN fused attention (fmhaSoftmax...)
U_BF16 = 2.0**-8  # bfloat16's relative precision (8 significant bits)
GAP = "loss gap"
REPO = Path(__file__).resolve().parents[2]


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


def write_atomic(path: str, text: str) -> None:
    """Writes `text` so that a reader (or a kill) never sees a half-written file."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# -------------------------------------------------------------------------------------------
# The child: one cell, compiled and timed alone in a fresh process


def _probe(cache: str) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp

    from minillm_jax.train import mfu
    from minillm_jax.experiments.benchmark import measure_matmul_peak

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
        # achieved bf16 matmul rate, 8192^3 on random data
        env["matmul_tflops"] = measure_matmul_peak(n=8192, repeats=10,
                                                    dtype=jnp.bfloat16) / 1e12
        stats = device.memory_stats() or {}
        env["memory_limit_gib"] = stats.get("bytes_limit", 0) / 2**30 or None
    return env


def _set_cache(cache: str) -> None:
    import jax

    if cache != "off":
        os.makedirs(cache, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", cache)


def _time_cell(cell: dict[str, Any], steps: int, peak: float | None) -> dict[str, Any]:
    import jax
    import numpy as np

    from minillm_jax.train import memory
    from minillm_jax.train import mfu
    from minillm_jax.train.build import build_run
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
    hlo = compiled.as_text()  # the optimised program: its cuDNN calls and its predicted time
    result["cudnn_in_hlo"] = cudnn_in_hlo(hlo)
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
    if jax.devices()[0].platform == "gpu":  # the roofline's prediction for this very program
        from minillm_jax.experiments.aot.report import predict_compiled

        predicted = predict_compiled(hlo, jax.devices()[0].device_kind,
                                     tokens_per_step, fpt, jax.device_count())
        if predicted:
            result.update(predicted, measured_over_predicted=1000 * step_s /
                          predicted["predicted_step_ms"])
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
    from minillm_jax.experiments.benchmark import train_losses
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
