"""Config sweeps: train a list of variants one after another, then summary.csv and plots.

    python -m minillm_jax.sweep configs/sweeps/NAME.py [--seeds N] [--baseline NAME]
        [--budget-minutes M] [--out runs/sweeps/NAME] [--only A,B] [--dry-run]

A sweep file defines

    def get_sweep() -> dict:
        return {"base": <ml_collections.ConfigDict>,
                "variants": [{"name": "L6_d768", "n_layer": 6, "n_embd": 768, ...}, ...],
                "seeds": 3,            # optional: a multi-seed ablation (--seeds wins)
                "baseline": "L6_d768"}  # optional: what the ablation compares against

Each variant (the base with the variant's field overrides) trains in its own workdir
`<out>/<name>`. A variant is finished once `<workdir>/result.json` (the train() result) exists;
finished variants are skipped, unfinished ones are trained again on the same workdir, so the
trainer resumes from the newest checkpoint there. Interrupt a sweep at any time and rerun the same
command to continue. After the runs, `<out>/summary.csv` and PNG plots are (re)written:
validation loss vs step, final perplexity vs parameters (with the planner's parametric-fit
prediction) and width vs depth (final validation loss vs n_layer, one line per n_embd).

Multi-seed ablations (`--seeds N` or "seeds": N): one run cannot tell a real improvement from
seed noise, so every variant trains N times; seed k (0..N-1) uses `seed = base.seed + k` and
`data_seed = base.data_seed + k` in `<out>/<variant>/seed<k>/`. The same k is the same init and
data order for every variant, which is what makes the per-seed (paired) differences cancel most of
the noise. Runs go seed-major (every variant for seed 0, then seed 1, ...), so an interrupted
ablation already holds complete pairs. The baseline is --baseline, else the sweep's "baseline",
else the first variant. After the runs: `summary.csv` (one row per run, with variant and seed),
`ablation.csv` / `ablation.md` (minillm_jax.ablation: final val loss mean ± std, the paired
difference against the baseline with its 95% t-interval, the training time to reach the
baseline's final loss) and the ablation plots (val loss vs wall-clock and vs FLOPs); the Markdown
table is printed.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import ml_collections

RESULT_FILE = "result.json"
CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.csv"
ABLATION_CSV = "ablation.csv"
ABLATION_MD = "ablation.md"
SUMMARY_FIELDS = (
    "name", "status", "model", "n_layer", "n_embd", "n_head", "params", "batch_size", "acc_steps",
    "sequence_length", "iterations", "steps", "tokens", "tokens_per_param", "compute_flops",
    "val_loss", "val_perplexity", "val_acc", "val_bpb", "predicted_loss", "train_time_s",
    "tokens_per_s", "budget_minutes", "run_dir", "error")
# A multi-seed sweep's summary: which variant and seed index (the seed<k> directory) each row is.
SEED_SUMMARY_FIELDS = ("name", "variant", "seed", *SUMMARY_FIELDS[1:])
SEED_FIELDS = ("seed", "data_seed")  # what --seeds sets: a variant may not set them itself
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
    if sweep.get("seeds") is not None:
        check_seeds(sweep["seeds"], f"{source}: 'seeds'")
    if sweep.get("baseline") is not None:
        check_baseline(sweep["baseline"], [v["name"] for v in variants], f"{source}: 'baseline'")
    return {**sweep, "base": base, "variants": variants}


def check_seeds(seeds: Any, where: str) -> int:
    """The number of seeds per variant: a positive int (1 gives the seed<k> layout, no CIs)."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise SweepError(f"{where} must be a whole number >= 1 (seeds per variant), not {seeds!r}")
    return seeds


def check_baseline(baseline: Any, names: Sequence[str], where: str) -> str:
    """The baseline must be one of the variants: the ablation table pairs every seed with it."""
    if baseline not in names:
        raise SweepError(f"{where} {baseline!r} is not a variant of the sweep; its variants are "
                         f"{list(names)}")
    return baseline


def resolve_seeds(sweep: dict[str, Any], seeds: int | None) -> int | None:
    """Seeds per variant: the --seeds value, else the sweep's "seeds", else None (one run each,
    in the single-seed layout <out>/<variant>)."""
    if seeds is not None:
        return check_seeds(seeds, "--seeds")
    return sweep.get("seeds")  # the sweep dict (not a run config); checked by check_sweep


def resolve_baseline(sweep: dict[str, Any], baseline: str | None) -> str:
    """The variant the ablation compares against: --baseline, else "baseline", else the first."""
    names = [v["name"] for v in sweep["variants"]]
    if baseline is not None:
        return check_baseline(baseline, names, "--baseline")
    return sweep.get("baseline") or names[0]


def resolve_ablation(sweep: dict[str, Any], seeds: int | None,
                     baseline: str | None) -> tuple[int | None, str | None]:
    """(seeds, baseline) of a multi-seed sweep, (None, None) of a plain one; a --baseline without
    seeds is refused rather than silently ignored."""
    seeds = resolve_seeds(sweep, seeds)
    if seeds is None:
        if baseline is not None:
            raise SweepError("--baseline is what a multi-seed ablation compares against: add "
                             "--seeds N (or \"seeds\": N in the sweep file)")
        return None, None
    return seeds, resolve_baseline(sweep, baseline)


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
                   budget_minutes: float | None = None,
                   seed: int | None = None) -> ml_collections.ConfigDict:
    """The base config with the variant's overrides, workdir <out>/<name>, and the time budget.

    With `seed` k (a multi-seed sweep) the workdir is <out>/<name>/seed<k> and seed/data_seed are
    shifted by k, identically for every variant, so seed k of two variants is a matched pair.
    """
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
    if seed is not None:
        _apply_seed(config, variant, seed)
    return config


def _apply_seed(config: ml_collections.ConfigDict, variant: dict[str, Any], seed: int) -> None:
    """Seed index k: seed and data_seed + k, workdir <workdir>/seed<k>."""
    fixed = [k for k in SEED_FIELDS if k in variant]
    if fixed:
        raise SweepError(f"variant {variant['name']!r} sets {fixed}, which --seeds/\"seeds\" "
                         "controls (seed k runs with base seed + k for every variant, so seeds "
                         "pair up): remove it from the variant, or set it in the base")
    config.seed = config.seed + seed
    config.data_seed = config.data_seed + seed
    config.workdir = os.path.join(config.workdir, f"seed{seed}")


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
    from minillm_jax.mfu import flops_per_token
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


def write_report(rows: Sequence[dict[str, Any]], out_dir: str, x: str = "step") -> list[str]:
    """summary.csv plus the sweep plots (curves against `x`: step, tokens or time); returns the
    paths written."""
    from minillm_jax.plotting import plot_sweep

    os.makedirs(out_dir, exist_ok=True)
    return [write_summary(rows, out_dir), *plot_sweep(rows, out_dir, x=x)]


def write_ablation_report(rows: Sequence[dict[str, Any]], out_dir: str,
                          planned: Mapping[str, Sequence[int]],
                          baseline: str) -> tuple[list[str], str]:
    """A multi-seed sweep's summary.csv, ablation.csv/.md and plots; returns (paths, Markdown).

    `planned`: variant -> its seeds, in table order. Statistics come from minillm_jax.ablation
    on the runs' metrics.jsonl. A planned seed without metrics (pending, or failed before its
    first log) enters the table as unfinished, so the seeds column (finished/planned) shows it
    instead of it silently vanishing; seed directories outside the plan (left by an earlier,
    larger sweep into the same --out) are not counted, so the table matches summary.csv.
    """
    from minillm_jax import ablation

    os.makedirs(out_dir, exist_ok=True)
    logged = ablation.load_runs(out_dir, list(planned))
    logged = {v: {k: recs for k, recs in by_seed.items() if k in planned[v]}
              for v, by_seed in logged.items()}
    table_runs = {v: {k: logged.get(v, {}).get(k, []) for k in seeds}
                  for v, seeds in planned.items()}
    table = ablation.ablation_table(table_runs, baseline)
    markdown = ablation.format_markdown(table)
    return [write_summary(rows, out_dir, SEED_SUMMARY_FIELDS),
            ablation.write_csv(table, os.path.join(out_dir, ABLATION_CSV)),
            _write_text(os.path.join(out_dir, ABLATION_MD), markdown + "\n"),
            *ablation.plot_ablation({v: r for v, r in logged.items() if r}, out_dir,
                                    baseline)], markdown


def _write_text(path: str, text: str) -> str:
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


# ---------------------------------------------------------------------------------------------
# Planning


@dataclass(frozen=True)
class PlannedRun:
    """One training run of a sweep: a variant, with its seed index k in a multi-seed sweep."""

    variant: str
    seed: int | None
    config: ml_collections.ConfigDict
    selected: bool  # False: not picked by --only (reported, never trained)

    @property
    def name(self) -> str:
        """The run's name in logs, summary.csv and wandb: variant, or variant/seed<k>."""
        return self.variant if self.seed is None else f"{self.variant}/seed{self.seed}"

    @property
    def run_dir(self) -> str:
        return self.config.workdir


def select_variants(names: Sequence[str], only: Sequence[str] | None) -> set[str]:
    """The variants --only picks (all without it); unknown names are an error, not a no-op."""
    if not only:
        return set(names)
    unknown = [n for n in only if n not in names]
    if unknown:
        raise SweepError(f"--only names {unknown} are not in the sweep; its variants are "
                         f"{list(names)}")
    return set(only)


def plan_runs(sweep: dict[str, Any], out: str, only: Sequence[str] | None = None,
              budget_minutes: float | None = None,
              seeds: int | None = None) -> list[PlannedRun]:
    """Every run of the sweep in training order.

    Seed-major with seeds (all variants for seed 0, then seed 1, ...): whenever the sweep stops,
    the seeds it finished are complete pairs for the ablation table.
    """
    selected = select_variants([v["name"] for v in sweep["variants"]], only)
    seed_list: list[int | None] = [None] if seeds is None else list(range(seeds))
    return [PlannedRun(v["name"], k, variant_config(sweep["base"], v, out, budget_minutes, k),
                       v["name"] in selected)
            for k in seed_list for v in sweep["variants"]]


def preflight(runs: Sequence[PlannedRun]) -> None:
    """Builds (validates) every selected run's config before anything trains: a typo in the last
    variant should fail now, naming the variant, not hours into the sweep."""
    from minillm_jax import config as config_lib

    for run in runs:
        if not run.selected:
            continue
        try:
            config_lib.build_config(run.config, run.name)
        except config_lib.ConfigError as err:
            raise SweepError(f"variant {run.variant!r}"
                             + ("" if run.seed is None else f" (seed {run.seed})")
                             + f": {err}") from None


def report_order(runs: Sequence[PlannedRun]) -> list[PlannedRun]:
    """Runs grouped by variant (in the sweep's order), then by seed: how tables read best."""
    variants = list(dict.fromkeys(r.variant for r in runs))
    return sorted(runs, key=lambda r: (variants.index(r.variant), r.seed or 0))


# ---------------------------------------------------------------------------------------------
# Running


def _default_train_fn() -> Callable[..., dict[str, Any]]:
    from minillm_jax import trainer

    return lambda config, name: trainer.train(config, name)  # late lookup: tests patch train


def _existing_row(run: PlannedRun) -> dict[str, Any]:
    """The row of a run not trained now: what its directory holds, else pending."""
    if os.path.isdir(run.run_dir):
        return read_run(run.run_dir, run.name)
    return summary_row(run.name, run.config, None, run.run_dir, "pending")


def _train_one(run: PlannedRun, train_fn: Callable[..., dict[str, Any]], prefix: str,
               log: Callable[[str], None]) -> dict[str, Any]:
    """Trains one run (resuming in its workdir) and returns its row; an ordinary exception is
    reported as a failed row so that one bad run does not end the sweep."""
    from minillm_jax import config as config_lib

    log(f"{prefix} {run.name}: training in {run.run_dir}")
    os.makedirs(run.run_dir, exist_ok=True)
    resolved = config_lib.build_config(run.config, run.name).to_dict()
    _write_json(os.path.join(run.run_dir, CONFIG_FILE), resolved)
    try:
        result = train_fn(run.config, run.name)
    except Exception as err:  # noqa: BLE001 - one bad variant must not end the sweep
        traceback.print_exc()
        log(f"{prefix} {run.name}: FAILED ({type(err).__name__}: {err}); "
            "continuing (rerun the sweep to retry it)")
        return summary_row(run.name, resolved, None, run.run_dir, "failed",
                           f"{type(err).__name__}: {err}")
    _write_json(os.path.join(run.run_dir, RESULT_FILE), dict(result))
    return read_run(run.run_dir, run.name)


def run_sweep(sweep: dict[str, Any] | str | os.PathLike, out: str,
              only: Sequence[str] | None = None, budget_minutes: float | None = None,
              train_fn: Callable[..., dict[str, Any]] | None = None,
              log: Callable[[str], None] = print, seeds: int | None = None,
              baseline: str | None = None) -> list[dict[str, Any]]:
    """Trains the unfinished (selected) runs in order, then writes the report.

    Returns one summary row per run (finished, failed or pending), grouped by variant. A run that
    raises an ordinary exception is reported and the sweep goes on; KeyboardInterrupt stops the
    sweep (rerun it to resume). With seeds (argument, else the sweep's "seeds") every variant
    runs that many times and the ablation report is written and its Markdown table logged.
    """
    sweep = load_sweep(sweep) if not isinstance(sweep, dict) else check_sweep(sweep)
    seeds, baseline = resolve_ablation(sweep, seeds, baseline)
    runs = plan_runs(sweep, out, only, budget_minutes, seeds)
    preflight(runs)

    os.makedirs(out, exist_ok=True)
    train_fn = train_fn or _default_train_fn()
    selected = [r for r in runs if r.selected]
    todo = {r.name for r in selected if not is_finished(r.run_dir)}
    what = "variants" if seeds is None else (
        f"variants x {seeds} seed{'s' if seeds != 1 else ''} = {len(runs)} runs, baseline "
        f"{baseline!r}")
    log(f"sweep: {len(sweep['variants'])} {what}; {len(selected) - len(todo)} of the "
        f"{len(selected)} selected already finished, {len(todo)} to run -> {out}")
    rows: dict[str, dict[str, Any]] = {}
    for i, run in enumerate(runs):
        prefix = f"[{i + 1}/{len(runs)}]"
        if run.name not in todo:  # finished, or not selected by --only
            rows[run.name] = _existing_row(run)
            if run.selected:
                log(f"{prefix} {run.name}: finished, skipped")
            continue
        rows[run.name] = _train_one(run, train_fn, prefix, log)
    ordered = report_order(runs)
    report_rows = [rows[r.name] for r in ordered]
    _report(report_rows, ordered, sweep, out, seeds, baseline, log)
    return report_rows


def _report(rows: list[dict[str, Any]], runs: Sequence[PlannedRun], sweep: dict[str, Any],
            out: str, seeds: int | None, baseline: str | None,
            log: Callable[[str], None]) -> None:
    """Writes the plain sweep report, or with seeds the ablation report (and logs its table)."""
    if seeds is None:
        log("wrote " + ", ".join(write_report(rows, out)))
        return
    for row, run in zip(rows, runs):
        row.update(variant=run.variant, seed=run.seed)
    planned = {v["name"]: list(range(seeds)) for v in sweep["variants"]}
    paths, markdown = write_ablation_report(rows, out, planned, baseline)
    log("wrote " + ", ".join(paths))
    log(markdown)


def dry_run(sweep: dict[str, Any], out: str, only: Sequence[str] | None,
            budget_minutes: float | None, seeds: int | None, baseline: str | None) -> list[str]:
    """One line per selected variant (parameters, what is finished, overrides), after checking
    every config as a real run would."""
    seeds, base_name = resolve_ablation(sweep, seeds, baseline)
    runs = plan_runs(sweep, out, only, budget_minutes, seeds)
    preflight(runs)
    lines = []
    for variant in sweep["variants"]:
        mine = [r for r in runs if r.variant == variant["name"] and r.selected]
        if not mine:
            continue
        row = summary_row(variant["name"], mine[0].config, None, mine[0].run_dir, "")
        done = sum(is_finished(r.run_dir) for r in mine)
        if seeds is None:
            state = "finished" if done else "to run"
        else:
            state = f"seeds 0-{seeds - 1}: {done} finished, {len(mine) - done} to run"
        overrides = {k: v for k, v in variant.items() if k != "name"}
        label = variant["name"] + (" (baseline)" if variant["name"] == base_name else "")
        lines.append(f"{label}: {row['params']:,} parameters, {state}, {overrides}")
    if seeds is not None:
        order = ", ".join(r.name for r in runs if r.selected)
        lines.append(f"order (seed-major): {order}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m minillm_jax.sweep",
        description="Train a sweep's variants one after another (resumable), then write "
                    "summary.csv and plots; with --seeds, a multi-seed ablation table.")
    parser.add_argument("sweep", help="sweep file defining get_sweep()")
    parser.add_argument("--out", default="", help="output directory "
                        "(default runs/sweeps/<sweep file name>)")
    parser.add_argument("--only", default="", help="comma-separated variant names to run")
    parser.add_argument("--budget-minutes", type=float, default=None,
                        help="set config.budget_minutes for every variant")
    parser.add_argument("--seeds", type=int, default=None,
                        help="train every variant N times (seed/data_seed + k in "
                             "<out>/<variant>/seed<k>) and write the ablation table "
                             "(default: the sweep's \"seeds\", else one run per variant)")
    parser.add_argument("--baseline", default=None,
                        help="variant the ablation compares against (default: the sweep's "
                             "\"baseline\", else the first variant)")
    parser.add_argument("--dry-run", action="store_true",
                        help="check every config, list the variants (parameters, status) and exit")
    args = parser.parse_args(argv)
    out = args.out or os.path.join("runs", "sweeps", Path(args.sweep).stem)
    only = [n.strip() for n in args.only.split(",") if n.strip()] or None
    try:
        sweep = load_sweep(args.sweep)
        if args.dry_run:
            print("\n".join(dry_run(sweep, out, only, args.budget_minutes, args.seeds,
                                    args.baseline)))
            return 0
        seeds, _ = resolve_ablation(sweep, args.seeds, args.baseline)
        rows = run_sweep(sweep, out, only=only, budget_minutes=args.budget_minutes,
                         seeds=args.seeds, baseline=args.baseline)
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if seeds is None:  # a multi-seed sweep has printed its ablation table instead
        print(format_table(rows))
    failed = [r["name"] for r in rows if r["status"] == "failed"]
    if failed:
        print(f"failed runs: {failed} (rerun the same command to retry them)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
