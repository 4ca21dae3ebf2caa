"""What the GPU compiler says about a train step: memory, kernels, the activation stash and the
roofline prediction, as one JSON-able dict and as markdown.

Every time figure is *predicted* by minillm_jax.experiments.aot.roofline from the compiled HLO;
none is a measurement. Memory figures are XLA's own buffer assignment for the target.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from minillm_jax.experiments.aot.hlo import parse_kernels
from minillm_jax.experiments.aot.roofline import Peaks, predict
from minillm_jax.experiments.aot.stash import stash
from minillm_jax.experiments.aot.targets import CompiledStep, GpuTarget, target_for_kind
from minillm_jax.config import ConfigError
from minillm_jax.train.memory import step_bytes
from minillm_jax.train.mfu import mfu, model_flops_per_token

GIB = 2**30


def target_peaks(target: GpuTarget) -> Peaks:
    """The time model's peaks for `target`: bf16 from the datasheet table (train/mfu.py), TF32
    (what XLA runs float32 dots as on Ampere and later) at half of it, as on the A100, H100, H200
    and L4 datasheets; HBM bandwidth from the target description."""
    bf16 = target.peak_flops
    if bf16 is None:
        raise ConfigError(f"no datasheet bf16 peak for {target.device_kind!r} in "
                          "minillm_jax/train/mfu.py DEVICE_PEAKS: add it to predict times")
    return Peaks(target.device_kind, {"bf16": bf16, "f32": bf16 / 2}, target.bandwidth,
                 collective_bandwidth=target.link_bandwidth)


def memory(compiled: Any) -> dict[str, int]:
    """XLA's memory analysis of a compiled step, per device, in bytes."""
    m = compiled.memory_analysis()
    fields = {"argument_bytes": m.argument_size_in_bytes, "output_bytes": m.output_size_in_bytes,
              "alias_bytes": m.alias_size_in_bytes, "temp_bytes": m.temp_size_in_bytes,
              "generated_code_bytes": m.generated_code_size_in_bytes}
    fields = {k: int(v) for k, v in fields.items()}
    fields["total_bytes"] = step_bytes(compiled)  # the trainer's pre-flight sum, one formula
    return fields


def analyse(step: CompiledStep, target: GpuTarget, n_devices: int, name: str,
            ) -> dict[str, Any]:
    """The whole report of the compiled step of config `name` (module docstring)."""
    run, compiled = step.run, step.compiled
    c = run.config
    text = compiled.as_text()
    kernels = parse_kernels(text)
    prediction = predict(kernels, target_peaks(target), n_devices=n_devices)
    mem = memory(compiled)
    tokens = c.data.acc_steps * c.data.batch_size * c.model.sequence_length
    flops_per_token = model_flops_per_token(run.abstract_state.params, c.model)
    tokens_per_s = tokens / prediction.step_s if prediction.step_s > 0 else 0.0
    utilisation = mfu(tokens_per_s, flops_per_token, target.peak_flops, n_devices)
    buffers = stash(text)
    usable = target.usable_bytes
    return {
        "config": name, "target": target.name, "device_kind": target.device_kind, "target_source": target.source,
        "devices": n_devices, "mesh": dict(run.mesh.shape),
        "batch_size": c.data.batch_size, "acc_steps": c.data.acc_steps,
        "sequence_length": c.model.sequence_length, "tokens_per_step": tokens,
        "compute_dtype": c.execution.compute_dtype, "remat": c.execution.remat,
        "attention": dataclasses.asdict(run.attention), "compile_s": step.compile_s,
        **mem,
        "device_memory_bytes": target.memory_bytes, "usable_bytes": usable,
        "fits": mem["total_bytes"] <= usable, "margin_bytes": usable - mem["total_bytes"],
        "flops_per_token": flops_per_token,
        "predicted_step_s": prediction.step_s, "predicted_tokens_per_s": tokens_per_s,
        "predicted_mfu": utilisation,
        "predicted_matmul_s": prediction.matmul_s,
        "predicted_memory_bound_s": prediction.memory_bound_s,
        "predicted_by_region": _seconds_table(prediction.by_region),
        "predicted_by_kind": _seconds_table(prediction.by_kind),
        "top_kernels": [_kernel_row(k, s) for k, s in prediction.top],
        "kernels": [_kernel_row(k, None) for k in kernels],
        "stash": [dataclasses.asdict(b) for b in buffers],
        "stash_bytes": sum(b.bytes for b in buffers if b.kind == "activation"),
        "stash_duplicate_bytes": sum(b.bytes for b in buffers if b.duplicate_of),
        "cudnn_calls": sorted({k.detail for k in kernels if k.kind == "attention"}),
        "collectives": _seconds_table(_collectives(kernels)),
    }


def _collectives(kernels: list) -> dict[str, tuple]:
    rows: dict[str, list] = {}
    for k in kernels:
        if k.kind == "collective":
            row = rows.setdefault(k.detail, [0, 0.0])
            row[0] += k.count
            row[1] += k.count * k.bytes
    return {name: (count, None, None, nbytes) for name, (count, nbytes) in rows.items()}


def _seconds_table(table: dict[str, tuple]) -> dict[str, dict[str, float | None]]:
    return {name: dict(zip(("count", "seconds", "flops", "bytes"), values))
            for name, values in (table or {}).items()}


def _kernel_row(k: Any, seconds: float | None) -> dict[str, Any]:
    row = {"name": k.name, "kind": k.kind, "detail": k.detail, "count": k.count,
           "flops": k.flops, "bytes": k.bytes, "region": k.region, "shape": k.shape,
           "operand_dtypes": list(k.operand_dtypes)}
    if seconds is not None:
        row["predicted_total_s"] = seconds
    return row


def _gib(n: float) -> str:
    return f"{n / GIB:.2f}"


def _ms(s: float | None) -> str:
    return "" if s is None else f"{1e3 * s:.2f}"


def markdown(report: dict[str, Any]) -> str:
    """The report for a reader: memory first, then the prediction and where the time goes."""
    r = report
    mfu_text = "n/a" if r["predicted_mfu"] is None else f"{100 * r['predicted_mfu']:.1f}%"
    lines = [
        f"# {r['config']} compiled for {r['devices']} x {r['device_kind']} ({r['target']})",
        "",
        f"Mesh {r['mesh']}, global batch {r['batch_size']} x {r['acc_steps']} micro-batches x "
        f"{r['sequence_length']} = {r['tokens_per_step']:,} tokens per step; "
        f"{r['compute_dtype']} matmuls, remat={r['remat']}, attention: "
        f"{r['attention']['impl']} ({r['attention']['reason']}). Compiled in "
        f"{r['compile_s']:.1f} s without a GPU (no autotuning: kernel choices may differ on the "
        "device).",
        "",
        "## Memory per device (XLA's buffer assignment)",
        "",
        "| arguments | outputs | aliased | temporaries | total | usable | fits |",
        "|---|---|---|---|---|---|---|",
        f"| {_gib(r['argument_bytes'])} GiB | {_gib(r['output_bytes'])} GiB | "
        f"{_gib(r['alias_bytes'])} GiB | {_gib(r['temp_bytes'])} GiB | "
        f"{_gib(r['total_bytes'])} GiB | {_gib(r['usable_bytes'])} GiB of "
        f"{_gib(r['device_memory_bytes'])} | "
        f"{'yes' if r['fits'] else 'NO'} (margin {_gib(r['margin_bytes'])} GiB) |",
        "",
        "usable: JAX's default allocator share (XLA_PYTHON_CLIENT_MEM_FRACTION, 0.75) less the "
        "5% headroom the trainer's memory check keeps: what fits here, the trainer starts.",
        "",
        "## Predicted time (roofline model, not a measurement)",
        "",
        f"Predicted step {_ms(r['predicted_step_s'])} ms, "
        f"{r['predicted_tokens_per_s']:,.0f} tokens/s, MFU {mfu_text} "
        f"({r['flops_per_token'] / 1e9:.2f} GFLOP per token). Matmuls and attention alone at "
        f"their roofline: {_ms(r['predicted_matmul_s'])} ms; memory-bound kernels: "
        f"{_ms(r['predicted_memory_bound_s'])} ms.",
        "",
        "| region | kernels per step | predicted ms | GFLOP | GB moved |",
        "|---|---|---|---|---|",
    ]
    lines += _table_rows(r["predicted_by_region"])
    lines += ["", "| kernel kind | per step | predicted ms | GFLOP | GB moved |",
              "|---|---|---|---|---|"]
    lines += _table_rows(r["predicted_by_kind"])
    lines += ["", "### The 10 kernels with the largest predicted time", "",
              "| kernel | kind | region | per step | predicted ms (all launches) | shape |",
              "|---|---|---|---|---|---|"]
    for k in r["top_kernels"]:
        lines.append(f"| {k['name']} | {k['kind']} {k['detail']} | {k['region']} | {k['count']} "
                     f"| {_ms(k['predicted_total_s'])} | `{k['shape'][:60]}` |")
    lines += ["", "## Activation stash (saved by the forward layer loop for the backward)", "",
              f"{_gib(r['stash_bytes'])} GiB of activations, of which "
              f"{_gib(r['stash_duplicate_bytes'])} GiB in buffers written from the same value "
              "as another.", "",
              "| # | kind | dtype | shape | GiB | written from | same source as |",
              "|---|---|---|---|---|---|---|"]
    for b in r["stash"]:
        dup = ", ".join(map(str, b["duplicate_of"])) or ""
        lines.append(f"| {b['index']} | {b['kind']} | {b['dtype']} | `{b['shape']}` | "
                     f"{_gib(b['bytes'])} | {', '.join(b['sources'])[:50]} | {dup} |")
    if r["collectives"]:
        lines += ["", "## Collectives per step", "", "| collective | count | GB |", "|---|---|---|"]
        for name, row in r["collectives"].items():
            lines.append(f"| {name} | {row['count']} | {row['bytes'] / 1e9:.3f} |")
    return "\n".join(lines) + "\n"


def _table_rows(table: dict[str, dict[str, float | None]]) -> list[str]:
    rows = sorted(table.items(), key=lambda item: -(item[1]["seconds"] or 0.0))
    return [f"| {name} | {v['count']:.0f} | {_ms(v['seconds'])} | {(v['flops'] or 0) / 1e9:,.1f} "
            f"| {(v['bytes'] or 0) / 1e9:,.2f} |" for name, v in rows]


def predict_compiled(hlo_text: str, device_kind: str, tokens_per_step: int,
                     flops_per_token: float, n_devices: int = 1) -> dict[str, float] | None:
    """The roofline prediction for a step compiled on a real GPU (gpu_check's calibration: its
    measured step time beside this), or None for a device with no shipped target."""
    target = target_for_kind(device_kind)
    if target is None or target.peak_flops is None:
        return None
    prediction = predict(parse_kernels(hlo_text), target_peaks(target), n_devices=n_devices)
    tokens_per_s = tokens_per_step / prediction.step_s
    return {"predicted_step_ms": 1e3 * prediction.step_s,
            "predicted_tokens_per_s": tokens_per_s,
            "predicted_mfu": mfu(tokens_per_s, flops_per_token, target.peak_flops, n_devices)}
