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
`ablation.csv` / `ablation.md` (minillm_jax.experiments.ablation: final val loss mean ± std, the paired
difference against the baseline with its 95% t-interval, the training time to reach the
baseline's final loss) and the ablation plots (val loss vs wall-clock and vs FLOPs); the Markdown
table is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import ml_collections

from minillm_jax.config.cli import run_command
from minillm_jax.experiments.runs import (CONFIG_FILE, RESULT_FILE, format_table, is_finished, read_run,
                              summary_row, write_json)
from minillm_jax.experiments.sweep_file import (SweepError, check_sweep, load_sweep, resolve_ablation,
                                    variant_config)

__all__ = ["SweepError", "check_sweep", "load_sweep", "read_run", "is_finished", "run_sweep",
           "dry_run", "variant_config", "resolve_ablation", "main"]


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
    from minillm_jax.train import trainer

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
    write_json(os.path.join(run.run_dir, CONFIG_FILE), resolved)
    try:
        result = train_fn(run.config, run.name)
    except Exception as err:  # noqa: BLE001 - one bad variant must not end the sweep
        traceback.print_exc()
        log(f"{prefix} {run.name}: FAILED ({type(err).__name__}: {err}); "
            "continuing (rerun the sweep to retry it)")
        return summary_row(run.name, resolved, None, run.run_dir, "failed",
                           f"{type(err).__name__}: {err}")
    write_json(os.path.join(run.run_dir, RESULT_FILE), dict(result))
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
        from minillm_jax.experiments.plotting import write_report

        log("wrote " + ", ".join(write_report(rows, out)))
        return
    for row, run in zip(rows, runs):
        row.update(variant=run.variant, seed=run.seed)
    planned = {v["name"]: list(range(seeds)) for v in sweep["variants"]}
    from minillm_jax.experiments.ablation import write_report as write_ablation_report

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
    return run_command(lambda: _run_main(args, out, only), SweepError)


def _run_main(args: argparse.Namespace, out: str, only: list[str] | None) -> int:
    sweep = load_sweep(args.sweep)
    if args.dry_run:
        print("\n".join(dry_run(sweep, out, only, args.budget_minutes, args.seeds,
                                args.baseline)))
        return 0
    seeds, _ = resolve_ablation(sweep, args.seeds, args.baseline)
    rows = run_sweep(sweep, out, only=only, budget_minutes=args.budget_minutes,
                     seeds=args.seeds, baseline=args.baseline)
    if seeds is None:  # a multi-seed sweep has printed its ablation table instead
        print(format_table(rows))
    failed = [r["name"] for r in rows if r["status"] == "failed"]
    if failed:
        print(f"failed runs: {failed} (rerun the same command to retry them)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
