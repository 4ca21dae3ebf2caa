"""Run directories as rows: what a training run left (result.json, metrics.jsonl, its config) read
into one summary row, and summary.csv / Markdown tables of such rows.

Shared by the sweep (`minillm_jax.sweep`), the plots of any run directories (`tools/plot.py`) and
the ablation report; it reads run directories and imports nothing of those, so they can all use it.
"""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Any, Sequence

import ml_collections

RESULT_FILE = "result.json"
CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.csv"
SUMMARY_FIELDS = (
    "name", "status", "model", "n_layer", "n_embd", "n_head", "params", "batch_size", "acc_steps",
    "sequence_length", "iterations", "opt", "lr", "muon_lr", "steps", "tokens", "tokens_per_param", "compute_flops",
    "val_loss", "val_perplexity", "val_acc", "val_bpb", "predicted_loss", "train_time_s",
    "tokens_per_s", "budget_minutes", "run_dir", "error")
# A multi-seed sweep's summary: which variant and seed index (the seed<k> directory) each row is.
SEED_SUMMARY_FIELDS = ("name", "variant", "seed", *SUMMARY_FIELDS[1:])


def read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_json(path: str, data: dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, default=_json_default)
        f.write("\n")
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written result.json


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def is_finished(run_dir: str) -> bool:
    return read_json(os.path.join(run_dir, RESULT_FILE)) is not None


def summary_row(name: str, config: ml_collections.ConfigDict | dict | None,
                result: dict[str, Any] | None, run_dir: str, status: str,
                error: str = "") -> dict[str, Any]:
    """One summary.csv row (missing values are empty strings)."""
    from minillm_jax.train.mfu import flops_per_token
    from minillm_jax.experiments.planner import config_params, predicted_loss

    row: dict[str, Any] = {k: "" for k in SUMMARY_FIELDS}
    row.update(name=name, status=status, run_dir=run_dir, error=error)
    if config is not None and not isinstance(config, ml_collections.ConfigDict):
        config = ml_collections.ConfigDict(config)
    if config is not None:
        for key in ("model", "n_layer", "n_embd", "n_head", "batch_size", "acc_steps",
                    "sequence_length", "iterations", "opt", "lr", "budget_minutes"):
            if key in config:
                row[key] = config[key]
        if "muon_lr" in config and row["opt"] == "muon":  # the hidden matrices' lr
            row["muon_lr"] = config["muon_lr"]
        try:
            row["params"] = config_params(config)
        except Exception:  # noqa: BLE001 - an unknown/older config still gets a row
            row["params"] = ""
    if result:
        for key in ("val_loss", "val_perplexity", "val_acc", "val_bpb", "train_time_s"):
            if key in result:
                row[key] = result[key]
        if "step" in result:
            row["steps"] = int(result["step"])
    if row["steps"] != "" and config is not None:
        tokens = row["steps"] * config.batch_size * config.acc_steps * config.sequence_length
        row["tokens"] = tokens
        if row["params"]:
            row["tokens_per_param"] = tokens / row["params"]
            row["compute_flops"] = tokens * flops_per_token(
                row["params"], config.n_layer, config.n_embd, config.sequence_length)
            if tokens > 0:
                row["predicted_loss"] = predicted_loss(row["params"], tokens)
    return row


def _tokens_per_s(run_dir: str) -> float | str:
    """Median of the logged tokens_per_s (all sessions of a resumed run)."""
    from minillm_jax.train.metrics import read_metrics

    try:
        rates = sorted(r["tokens_per_s"] for r in read_metrics(run_dir) if "tokens_per_s" in r)
    except OSError:
        return ""
    return rates[len(rates) // 2] if rates else ""


def _result_from_metrics(run_dir: str) -> tuple[dict[str, Any] | None, str]:
    """(result, status) of a run without result.json: its final eval, else its last eval."""
    from minillm_jax.train.metrics import read_metrics

    try:
        records = read_metrics(run_dir)
    except OSError:
        return None, "pending"
    for record in reversed(records):
        if "final_val_loss" in record:
            result = {k[len("final_"):]: v for k, v in record.items() if k.startswith("final_")}
            return {**result, "step": record["step"]}, "finished"
    for record in reversed(records):
        if "val_loss" in record:
            return {**record}, "partial"
    return None, "partial"


def read_run_config(run_dir: str) -> dict[str, Any] | None:
    """The run's config: <run_dir>/config.json (sweeps), else the one saved with a checkpoint."""
    config = read_json(os.path.join(run_dir, CONFIG_FILE))
    if config is not None:
        return config
    if not os.path.isdir(os.path.join(run_dir, "checkpoints")):
        return None
    try:
        from minillm_jax.train import checkpointing

        return checkpointing.load_config(run_dir)[0].to_dict()
    except Exception:  # noqa: BLE001 - plots still work without the config
        return None


def read_run(run_dir: str, name: str | None = None) -> dict[str, Any]:
    """A summary row for any run directory (a sweep's or a plain training run's)."""
    name = name or os.path.basename(os.path.normpath(run_dir))
    result = read_json(os.path.join(run_dir, RESULT_FILE))
    status = "finished"
    if result is None:
        result, status = _result_from_metrics(run_dir)
    row = summary_row(name, read_run_config(run_dir), result, run_dir, status)
    if row["steps"] != "":
        row["tokens_per_s"] = _tokens_per_s(run_dir)
    return row


def write_summary(rows: Sequence[dict[str, Any]], out_dir: str,
                  fields: Sequence[str] = SUMMARY_FIELDS) -> str:
    path = os.path.join(out_dir, SUMMARY_FILE)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(row.get(k, "")) for k in fields})
    return path


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    return value


def write_text(path: str, text: str) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of the summary's main columns."""
    cols = [("name", "{}"), ("n_layer", "{}"), ("n_embd", "{}"), ("n_head", "{}"),
            ("params", "{:,}"), ("steps", "{}"), ("tokens", "{:,}"), ("val_loss", "{:.4f}"),
            ("val_perplexity", "{:.2f}"), ("val_acc", "{:.4f}"), ("predicted_loss", "{:.3f}"),
            ("train_time_s", "{:.1f}"), ("status", "{}")]
    lines = ["| " + " | ".join(c for c, _ in cols) + " |",
             "|" + "|".join("---" for _ in cols) + "|"]
    for row in rows:
        cells = []
        for col, fmt in cols:
            value = row.get(col, "")
            cells.append(fmt.format(value) if value != "" else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
