"""Config sweeps: train a list of variants one after another, then summary.csv and plots.

    python -m minillm_jax.sweep configs/sweeps/NAME.py [--budget-minutes M]
        [--out runs/sweeps/NAME] [--only A,B] [--dry-run]

A sweep file defines

    def get_sweep() -> dict:
        return {"base": <ml_collections.ConfigDict>,
                "variants": [{"name": "L6_d768", "n_layer": 6, "n_embd": 768, ...}, ...]}

Each variant (the base with the variant's field overrides) trains in its own workdir
`<out>/<name>`. A variant is finished once `<workdir>/result.json` (the train() result) exists;
finished variants are skipped, unfinished ones are trained again on the same workdir, so the
trainer resumes from the newest checkpoint there. Interrupt a sweep at any time and rerun the same
command to continue. After the runs, `<out>/summary.csv` and PNG plots are (re)written:
validation loss vs step, final perplexity vs parameters (with the planner's parametric-fit
prediction) and width vs depth (final validation loss vs n_layer, one line per n_embd).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

import ml_collections

RESULT_FILE = "result.json"
CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.csv"
SUMMARY_FIELDS = (
    "name", "status", "model", "n_layer", "n_embd", "n_head", "params", "batch_size", "acc_steps",
    "sequence_length", "iterations", "steps", "tokens", "tokens_per_param", "compute_flops",
    "val_loss", "val_perplexity", "val_acc", "val_bpb", "predicted_loss", "train_time_s",
    "tokens_per_s", "budget_minutes", "run_dir", "error")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]*")


class SweepError(ValueError):
    """A sweep file or option that cannot work; the message says what to change."""


# ---------------------------------------------------------------------------------------------
# Loading and building variant configs


def load_sweep(path: str | os.PathLike) -> dict[str, Any]:
    """Executes a sweep file and returns its checked `get_sweep()`."""
    from minillm_jax.config import exec_python_file

    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep file {str(path)!r} does not exist")
    module = exec_python_file(path, "sweep")
    if not hasattr(module, "get_sweep"):
        raise SweepError(f"{path} defines no get_sweep() returning {{'base': ..., 'variants': ...}}")
    return check_sweep(module.get_sweep(), str(path))


def check_sweep(sweep: dict[str, Any], source: str = "sweep") -> dict[str, Any]:
    if not isinstance(sweep, dict) or "base" not in sweep or "variants" not in sweep:
        raise SweepError(f"{source}: get_sweep() must return {{'base': ConfigDict, "
                         "'variants': [{'name': ..., field: value, ...}, ...]}")
    base = sweep["base"]
    if not isinstance(base, ml_collections.ConfigDict):
        raise SweepError(f"{source}: 'base' must be an ml_collections.ConfigDict, "
                         f"not {type(base).__name__}")
    variants = list(sweep["variants"])
    if not variants:
        raise SweepError(f"{source}: 'variants' is empty")
    seen: set[str] = set()
    for i, variant in enumerate(variants):
        if not isinstance(variant, dict) or not isinstance(variant.get("name"), str):
            raise SweepError(f"{source}: variant #{i} needs a string 'name'")
        name = variant["name"]
        if not _NAME_RE.fullmatch(name):
            raise SweepError(f"{source}: variant name {name!r} must be usable as a directory name "
                             "(letters, digits, . _ - + =)")
        if name in seen:
            raise SweepError(f"{source}: variant name {name!r} appears twice; names must be "
                             "unique (each is a workdir)")
        seen.add(name)
        unknown = [k for k in variant if k != "name" and k not in base]
        if unknown:
            raise SweepError(f"{source}: variant {name!r} sets {unknown}, which the base config "
                             "does not have (check the spelling against configs/base.py)")
    return {**sweep, "base": base, "variants": variants}


def _set_field(config: ml_collections.ConfigDict, key: str, value: Any, where: str) -> None:
    old = config[key]
    if isinstance(old, int) and not isinstance(old, bool) and isinstance(value, float) and (
            value.is_integer()):
        value = int(value)
    try:
        config[key] = value
    except (TypeError, ValueError) as err:
        raise SweepError(f"{where}: cannot set {key}={value!r} ({err})") from None


def variant_config(base: ml_collections.ConfigDict, variant: dict[str, Any], out: str,
                   budget_minutes: float | None = None) -> ml_collections.ConfigDict:
    """The base config with the variant's overrides, workdir <out>/<name>, and the time budget."""
    config = ml_collections.ConfigDict(base.to_dict())
    name = variant["name"]
    for key, value in variant.items():
        if key != "name":
            _set_field(config, key, value, f"variant {name!r}")
    if budget_minutes is not None:
        if "budget_minutes" not in config:
            raise SweepError(
                "--budget-minutes needs the config field `budget_minutes` (the trainer's "
                "wall-clock budget), but this sweep's base config has none: update "
                "configs/base.py / the trainer, or run without --budget-minutes and limit runs "
                "with `iterations` in the variants")
        _set_field(config, "budget_minutes", float(budget_minutes), "--budget-minutes")
    config.workdir = os.path.join(out, name)
    return config


# ---------------------------------------------------------------------------------------------
# Run records and summary rows


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_json(path: str, data: dict[str, Any]) -> None:
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
    return _read_json(os.path.join(run_dir, RESULT_FILE)) is not None


def summary_row(name: str, config: ml_collections.ConfigDict | dict | None,
                result: dict[str, Any] | None, run_dir: str, status: str,
                error: str = "") -> dict[str, Any]:
    """One summary.csv row (missing values are empty strings)."""
    from minillm_jax.benchmark import flops_per_token
    from minillm_jax.planner import config_params, predicted_loss

    row: dict[str, Any] = {k: "" for k in SUMMARY_FIELDS}
    row.update(name=name, status=status, run_dir=run_dir, error=error)
    if config is not None and not isinstance(config, ml_collections.ConfigDict):
        config = ml_collections.ConfigDict(config)
    if config is not None:
        for key in ("model", "n_layer", "n_embd", "n_head", "batch_size", "acc_steps",
                    "sequence_length", "iterations", "budget_minutes"):
            if key in config:
                row[key] = config[key]
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
    from minillm_jax.metrics import read_metrics

    try:
        rates = sorted(r["tokens_per_s"] for r in read_metrics(run_dir) if "tokens_per_s" in r)
    except OSError:
        return ""
    return rates[len(rates) // 2] if rates else ""


def _result_from_metrics(run_dir: str) -> tuple[dict[str, Any] | None, str]:
    """(result, status) of a run without result.json: its final eval, else its last eval."""
    from minillm_jax.metrics import read_metrics

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
    config = _read_json(os.path.join(run_dir, CONFIG_FILE))
    if config is not None:
        return config
    if not os.path.isdir(os.path.join(run_dir, "checkpoints")):
        return None
    try:
        from minillm_jax import checkpointing

        return checkpointing.load_config(run_dir)[0].to_dict()
    except Exception:  # noqa: BLE001 - plots still work without the config
        return None


def read_run(run_dir: str, name: str | None = None) -> dict[str, Any]:
    """A summary row for any run directory (a sweep's or a plain training run's)."""
    name = name or os.path.basename(os.path.normpath(run_dir))
    result = _read_json(os.path.join(run_dir, RESULT_FILE))
    status = "finished"
    if result is None:
        result, status = _result_from_metrics(run_dir)
    row = summary_row(name, read_run_config(run_dir), result, run_dir, status)
    if row["steps"] != "":
        row["tokens_per_s"] = _tokens_per_s(run_dir)
    return row


def write_summary(rows: Sequence[dict[str, Any]], out_dir: str) -> str:
    path = os.path.join(out_dir, SUMMARY_FILE)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(SUMMARY_FIELDS), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(row.get(k, "")) for k in SUMMARY_FIELDS})
    return path


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    return value


def write_report(rows: Sequence[dict[str, Any]], out_dir: str) -> list[str]:
    """summary.csv plus the sweep plots; returns the paths written."""
    from minillm_jax.plotting import plot_sweep

    os.makedirs(out_dir, exist_ok=True)
    return [write_summary(rows, out_dir), *plot_sweep(rows, out_dir)]


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


# ---------------------------------------------------------------------------------------------
# Running


def run_sweep(sweep: dict[str, Any] | str | os.PathLike, out: str,
              only: Sequence[str] | None = None, budget_minutes: float | None = None,
              train_fn: Callable[..., dict[str, Any]] | None = None,
              log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Trains the unfinished (selected) variants in order, then writes the report.

    Returns one summary row per variant (finished, failed or pending). A variant that raises an
    ordinary exception is reported and the sweep goes on; KeyboardInterrupt stops the sweep (rerun
    it to resume).
    """
    from minillm_jax import config as config_lib

    if not isinstance(sweep, dict):
        sweep = load_sweep(sweep)
    else:
        sweep = check_sweep(sweep)
    base, variants = sweep["base"], sweep["variants"]
    names = [v["name"] for v in variants]
    selected = set(names)
    if only:
        unknown = [n for n in only if n not in selected]
        if unknown:
            raise SweepError(f"--only names {unknown} are not in the sweep; its variants are "
                             f"{names}")
        selected = set(only)
    # Build and check every selected config first: a typo in the last variant should not surface
    # hours into the sweep.
    configs = {}
    for variant in variants:
        config = variant_config(base, variant, out, budget_minutes)
        if variant["name"] in selected:
            try:
                config_lib.build_config(config, variant["name"])
            except config_lib.ConfigError as err:
                raise SweepError(f"variant {variant['name']!r}: {err}") from None
        configs[variant["name"]] = config

    os.makedirs(out, exist_ok=True)
    if train_fn is None:
        from minillm_jax import trainer

        train_fn = lambda config, name: trainer.train(config, name)  # noqa: E731 - late lookup
    rows = []
    todo = [n for n in names if n in selected and not is_finished(os.path.join(out, n))]
    log(f"sweep: {len(names)} variants, {len(selected) - len(todo)} of the {len(selected)} "
        f"selected already finished, {len(todo)} to run -> {out}")
    for i, name in enumerate(names):
        config, run_dir = configs[name], os.path.join(out, name)
        if name not in todo:  # finished, or not selected by --only
            rows.append(read_run(run_dir, name) if os.path.isdir(run_dir) else summary_row(
                name, config, None, run_dir, "pending"))
            if name in selected:
                log(f"[{i + 1}/{len(names)}] {name}: finished, skipped")
            continue
        log(f"[{i + 1}/{len(names)}] {name}: training in {run_dir}")
        os.makedirs(run_dir, exist_ok=True)
        resolved = config_lib.build_config(config, name).to_dict()
        _write_json(os.path.join(run_dir, CONFIG_FILE), resolved)
        try:
            result = train_fn(config, name)
        except Exception as err:  # noqa: BLE001 - one bad variant must not end the sweep
            traceback.print_exc()
            log(f"[{i + 1}/{len(names)}] {name}: FAILED ({type(err).__name__}: {err}); "
                "continuing (rerun the sweep to retry it)")
            rows.append(summary_row(name, resolved, None, run_dir, "failed",
                                    f"{type(err).__name__}: {err}"))
            continue
        _write_json(os.path.join(run_dir, RESULT_FILE), dict(result))
        rows.append(read_run(run_dir, name))
    paths = write_report(rows, out)
    log("wrote " + ", ".join(paths))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m minillm_jax.sweep",
        description="Train a sweep's variants one after another (resumable), then write "
                    "summary.csv and plots.")
    parser.add_argument("sweep", help="sweep file defining get_sweep()")
    parser.add_argument("--out", default="", help="output directory "
                        "(default runs/sweeps/<sweep file name>)")
    parser.add_argument("--only", default="", help="comma-separated variant names to run")
    parser.add_argument("--budget-minutes", type=float, default=None,
                        help="set config.budget_minutes for every variant")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the variants (parameters, status) and exit")
    args = parser.parse_args(argv)
    out = args.out or os.path.join("runs", "sweeps", Path(args.sweep).stem)
    only = [n.strip() for n in args.only.split(",") if n.strip()] or None
    try:
        if args.dry_run:
            sweep = load_sweep(args.sweep)
            for variant in sweep["variants"]:
                if only and variant["name"] not in only:
                    continue
                config = variant_config(sweep["base"], variant, out, args.budget_minutes)
                row = summary_row(variant["name"], config, None, config.workdir, "")
                state = "finished" if is_finished(config.workdir) else "to run"
                overrides = {k: v for k, v in variant.items() if k != "name"}
                print(f"{variant['name']}: {row['params']:,} parameters, {state}, {overrides}")
            return 0
        rows = run_sweep(args.sweep, out, only=only, budget_minutes=args.budget_minutes)
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(rows))
    failed = [r["name"] for r in rows if r["status"] == "failed"]
    if failed:
        print(f"failed variants: {failed} (rerun the same command to retry them)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
