"""Loss and perplexity curves from metrics.jsonl files, and sweep plots, written to PNG
(matplotlib, no display).

Curves go against the step, the training tokens or the training wall-clock (`x`: step | tokens
| time). Not every record carries every x: train records hold `tokens` but not `train_time_s`,
eval records the reverse, the final record `train_time_s` only. Both are cumulative (0 at step
0), so a record without x takes it from a record of the same step, else by linear interpolation
in step between the nearest records that have it. Beyond the last such record, tokens are
extrapolated at the run's tokens per step (exact for a fixed batch shape, as the final eval of a
budget-stopped run needs); training time is not guessed: those points (e.g. train logs after the
last eval of a crashed run) are left out with a warning, as is a run that never logged x.

Command line (also tools/plot.py): plots and a summary table for any set of run directories
(sweep variants or plain runs).

    python -m minillm_jax.experiments.plotting RUN_DIR [RUN_DIR ...] [--out DIR] [--x step|tokens|time]

writes into DIR (default: the run directory, or the runs' parent directory):
    curves.png                train/val loss and val perplexity vs step (per run)
    val_loss_vs_step.png      validation loss vs step, all runs
    perplexity_vs_params.png  final perplexity vs parameters, with the parametric-fit prediction
                              (several runs only)
    width_vs_depth.png        final validation loss vs n_layer, one line per n_embd (several runs
                              only)
    summary.csv               one row per run (as python -m minillm_jax.sweep writes)

A star on every validation curve marks the final evaluation (final_val_loss at its step).
`--x tokens` / `--x time` plot the curves against training tokens / training wall-clock
(train_time_s, evaluation excluded) instead, as curves_vs_X.png and val_loss_vs_X.png; points
that cannot be placed on that axis are left out with a warning.
`--out FILE.png` writes only the curves plot to that file (the older behaviour).
"""

from __future__ import annotations

import argparse
import bisect
import math
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from minillm_jax.train.metrics import read_metrics  # noqa: E402
from minillm_jax.experiments.runs import format_table, read_run, write_summary  # noqa: E402

X_FIELDS = {"step": "step", "tokens": "tokens", "time": "train_time_s"}
X_LABELS = {"step": "step", "tokens": "training tokens",
            "time": "training wall-clock (s, evaluation excluded)"}


@dataclass(frozen=True)
class Series:
    """One quantity against x, sorted by step; `left_out` counts points that had no x."""

    x: list[float]
    y: list[float]
    left_out: int = 0


@dataclass(frozen=True)
class ValLossCurve:
    """A run's periodic val losses and its final evaluation, the point the marker shows
    (None for an unfinished run, or one whose final eval has no x)."""

    periodic: Series
    final: tuple[float, float] | None


def _check_x(x: str) -> None:
    if x not in X_FIELDS:
        raise ValueError(f"x must be one of {list(X_FIELDS)}, got {x!r}")


def x_by_step(records: Sequence[dict], x: str) -> dict[int, float]:
    """step -> x for every step some record gives x at (the last record wins)."""
    _check_x(x)
    field = X_FIELDS[x]
    known = {int(r["step"]): float(r[field]) for r in records
             if "step" in r and r.get(field) is not None}
    if x != "step":
        known.setdefault(0, 0.0)  # cumulative quantities start at 0
    return known


def x_at(known: dict[int, float], step: int, extrapolate: bool = False) -> float | None:
    """x at `step`: known, else interpolated between the nearest known steps; beyond the last,
    proportional to the step if `extrapolate` (constant x per step), else None."""
    if step in known:
        return known[step]
    steps = sorted(known)
    i = bisect.bisect_left(steps, step)
    if i == len(steps) and extrapolate and steps and steps[-1] > 0:
        return known[steps[-1]] * step / steps[-1]
    if i == 0 or i == len(steps):
        return None
    s0, s1 = steps[i - 1], steps[i]
    return known[s0] + (known[s1] - known[s0]) * (step - s0) / (s1 - s0)


def series(records: Sequence[dict], key: str, x: str = "step") -> Series:
    """`key` against x, one point per step (the last record wins: a resumed run may repeat
    steps), points without x counted in `left_out`."""
    known = x_by_step(records, x)
    by_step = {int(r["step"]): float(r[key]) for r in records
               if "step" in r and r.get(key) is not None}
    xs, ys, left_out = [], [], 0
    for step in sorted(by_step):
        value = _x_of(known, step, x)
        if value is None:
            left_out += 1
            continue
        xs.append(value)
        ys.append(by_step[step])
    return Series(xs, ys, left_out)


def final_point(records: Sequence[dict], key: str = "final_val_loss",
                x: str = "step") -> tuple[float, float] | None:
    """(x, value) of the run's last final evaluation, None if it has none or no x for it."""
    finals = [r for r in records if "step" in r and r.get(key) is not None]
    if not finals:
        return None
    step = int(finals[-1]["step"])
    value = _x_of(x_by_step(records, x), step, x)
    return None if value is None else (value, float(finals[-1][key]))


def _x_of(known: dict[int, float], step: int, x: str) -> float | None:
    """x of a point at `step` (tokens may be extrapolated, time may not: see the docstring)."""
    return float(step) if x == "step" else x_at(known, step, extrapolate=x == "tokens")


def val_loss_curve(records: Sequence[dict], x: str = "step") -> ValLossCurve:
    """What a val-loss plot draws: the periodic evals and the final-eval marker."""
    return ValLossCurve(series(records, "val_loss", x), final_point(records, "final_val_loss", x))


def _warn_left_out(label: str, x: str, *parts: Series, final_missing: bool = False) -> None:
    """One warning per run whose points could not be placed on the x axis."""
    left_out = sum(p.left_out for p in parts)
    if left_out or final_missing:
        what = f"{left_out} point(s)" + (" and the final eval" if final_missing else "")
        warnings.warn(f"{label}: {what} left out of the plot against {x}: no "
                      f"{X_FIELDS[x]} logged at or after their step", stacklevel=3)


def _has_final(records: Sequence[dict], key: str) -> bool:
    return any(r.get(key) is not None for r in records)


def _mark_final(ax, point: tuple[float, float] | None, colour: str,
                last: tuple[float, float] | None = None) -> None:
    """A star at the final eval, joined by a dotted line to the last periodic eval before it."""
    if point is None:
        return
    ax.plot(*point, "*", ms=11, color=colour)
    if last is not None and last[0] < point[0]:
        ax.plot([last[0], point[0]], [last[1], point[1]], ":", color=colour)


def _last(s: Series) -> tuple[float, float] | None:
    return (s.x[-1], s.y[-1]) if s.x else None


def plot_runs(run_dirs: Sequence[str], out: str, x: str = "step") -> str:
    """Train/val loss (left) and val perplexity (right) against x for each run; a star marks
    the final evaluation."""
    _check_x(x)
    fig, (ax_loss, ax_ppl) = plt.subplots(1, 2, figsize=(12, 4.5))
    for run_dir in run_dirs:
        records = read_metrics(run_dir)
        label = os.path.basename(os.path.normpath(run_dir))
        train = series(records, "train_loss", x)
        val = val_loss_curve(records, x)
        ppl = series(records, "val_perplexity", x)
        ppl_final = final_point(records, "final_val_perplexity", x)
        _warn_left_out(label, x, train, val.periodic, ppl, final_missing=(
            val.final is None and _has_final(records, "final_val_loss")))
        line, = ax_loss.plot(train.x, train.y, alpha=0.5, label=f"{label} train")
        colour = line.get_color()
        ax_loss.plot(val.periodic.x, val.periodic.y, "o-", color=colour, label=f"{label} val")
        _mark_final(ax_loss, val.final, colour, _last(val.periodic))
        ax_ppl.plot(ppl.x, ppl.y, "o-", color=colour, label=label)
        _mark_final(ax_ppl, ppl_final, colour, _last(ppl))
    ax_loss.set(xlabel=X_LABELS[x], ylabel="loss (nats/token)", title="loss (star: final eval)")
    ax_ppl.set(xlabel=X_LABELS[x], ylabel="perplexity", title="validation perplexity",
               yscale="log")
    for ax in (ax_loss, ax_ppl):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)  # --out new/dir/curves.png
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


# ---------------------------------------------------------------------------------------------
# Sweep plots. `runs` are summary rows (minillm_jax.experiments.runs.read_run): dicts with name, run_dir,
# params, n_layer, n_embd, steps, tokens, val_loss, val_perplexity ("" where unknown).

SWEEP_PLOTS = {"val_loss": "val_loss_vs_step.png", "perplexity": "perplexity_vs_params.png",
               "width_depth": "width_vs_depth.png", "curves": "curves.png"}


def _known(row: dict, *keys: str) -> bool:
    return all(row.get(k, "") not in ("", None) for k in keys)


def finish_figure(fig, ax, out: str) -> str:
    ax.grid(alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _human(n: float) -> str:
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.0f}"


def plot_val_loss(runs: Sequence[dict], out: str, x: str = "step") -> str:
    """Validation loss against x for every run (periodic evals; a star marks the final eval)."""
    _check_x(x)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for row in runs:
        run_dir = row.get("run_dir", "")
        if not run_dir or not os.path.exists(os.path.join(run_dir, "metrics.jsonl")):
            continue
        records = read_metrics(run_dir)
        curve = val_loss_curve(records, x)
        _warn_left_out(row["name"], x, curve.periodic, final_missing=(
            curve.final is None and _has_final(records, "final_val_loss")))
        line, = ax.plot(curve.periodic.x, curve.periodic.y, "o-", ms=3, label=row["name"])
        _mark_final(ax, curve.final, line.get_color(), _last(curve.periodic))
    ax.set(xlabel=X_LABELS[x], ylabel="validation loss (nats/token)",
           title="validation loss (line: periodic evals, star: final eval)")
    return finish_figure(fig, ax, out)


def plot_perplexity_vs_params(runs: Sequence[dict], out: str) -> str:
    """Final validation perplexity against parameters, with the parametric fit's prediction
    exp(L(N, D)) at the runs' median token count (on a second axis when it is off the data's
    scale: the fit is for MassiveText, not for every corpus)."""
    from minillm_jax.experiments.planner import predicted_loss

    points = [r for r in runs if _known(r, "params", "val_perplexity")]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for row in points:
        ax.plot(row["params"], row["val_perplexity"], "o", ms=7)
        ax.annotate(row["name"], (row["params"], row["val_perplexity"]), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    tokens = sorted(float(r["tokens"]) for r in points if _known(r, "tokens") and r["tokens"] > 0)
    if points and tokens:
        d = tokens[len(tokens) // 2]
        lo = min(r["params"] for r in points) / 1.5
        hi = max(r["params"] for r in points) * 1.5
        grid = [lo * (hi / lo) ** (i / 63) for i in range(64)]
        pred = [math.exp(min(predicted_loss(n, d), 700.0)) for n in grid]
        observed = [r["val_perplexity"] for r in points]
        label = f"Hoffmann et al. fit exp(L(N, D={_human(d)} tokens))"
        overlap = max(pred) >= min(observed) / 10 and min(pred) <= max(observed) * 10
        target = ax if overlap else ax.twinx()
        target.plot(grid, pred, "--", color="gray", label=label)
        if not overlap:
            target.set_ylabel("predicted perplexity (fit, right axis)", color="gray")
            target.set_yscale("log")
            target.legend(fontsize=8, loc="upper right")
    ax.set(xlabel="parameters", ylabel="final validation perplexity", xscale="log",
           yscale="log", title="final perplexity vs parameters")
    return finish_figure(fig, ax, out)


def plot_width_depth(runs: Sequence[dict], out: str) -> str:
    """Final validation loss against n_layer, one line per n_embd (points labelled by params)."""
    points = [r for r in runs if _known(r, "n_layer", "n_embd", "val_loss")]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for width in sorted({int(r["n_embd"]) for r in points}):
        rows = sorted((r for r in points if int(r["n_embd"]) == width), key=lambda r: r["n_layer"])
        ax.plot([r["n_layer"] for r in rows], [r["val_loss"] for r in rows], "o-",
                label=f"n_embd={width}")
        for r in rows:
            if _known(r, "params"):
                ax.annotate(_human(r["params"]), (r["n_layer"], r["val_loss"]), fontsize=7,
                            xytext=(4, -10), textcoords="offset points")
    ax.set(xlabel="n_layer (depth)", ylabel="final validation loss (nats/token)",
           title="width vs depth (labels: parameters)")
    layers = sorted({int(r["n_layer"]) for r in points})
    if layers:
        ax.set_xticks(layers)
    return finish_figure(fig, ax, out)


def sweep_plot_names(x: str = "step") -> dict[str, str]:
    """File names of the sweep plots; curves against tokens/time get their own names so that
    they never overwrite the plots against step."""
    _check_x(x)
    if x == "step":
        return dict(SWEEP_PLOTS)
    return {**SWEEP_PLOTS, "val_loss": f"val_loss_vs_{x}.png", "curves": f"curves_vs_{x}.png"}


def plot_sweep(runs: Sequence[dict], out_dir: str, x: str = "step") -> list[str]:
    """The sweep plots into out_dir; returns their paths.

    Perplexity vs parameters and width vs depth compare runs, so they are written only when
    several runs are given (for one run they would be a single point).
    """
    names = sweep_plot_names(x)
    paths = [plot_val_loss(runs, os.path.join(out_dir, names["val_loss"]), x)]
    if len(runs) > 1:
        paths.append(plot_perplexity_vs_params(runs, os.path.join(out_dir, names["perplexity"])))
        paths.append(plot_width_depth(runs, os.path.join(out_dir, names["width_depth"])))
    run_dirs = [r["run_dir"] for r in runs
                if r.get("run_dir") and os.path.exists(os.path.join(r["run_dir"], "metrics.jsonl"))]
    if run_dirs:
        paths.append(plot_runs(run_dirs, os.path.join(out_dir, names["curves"]), x))
    return paths


def write_report(rows: Sequence[dict[str, Any]], out_dir: str, x: str = "step") -> list[str]:
    """summary.csv plus the sweep plots (curves against `x`: step, tokens or time); returns the
    paths written."""
    os.makedirs(out_dir, exist_ok=True)
    return [write_summary(rows, out_dir), *plot_sweep(rows, out_dir, x=x)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m minillm_jax.experiments.plotting",
        description="Plots and a summary table for any set of run directories (sweep variants "
                    "or plain runs).")
    parser.add_argument("run_dirs", nargs="+", help="run directories holding metrics.jsonl")
    parser.add_argument("--out", default="", help="output directory (or a .png for the curves "
                                                  "plot only)")
    parser.add_argument("--x", choices=list(X_FIELDS), default="step",
                        help="x axis of the curves: step, training tokens or training wall-clock "
                             "(train_time_s)")
    args = parser.parse_args(argv)
    for run_dir in args.run_dirs:
        if not os.path.exists(os.path.join(run_dir, "metrics.jsonl")):
            parser.error(f"{run_dir} has no metrics.jsonl: pass a run directory (the workdir)")
    if args.out.lower().endswith(".png"):
        print(plot_runs(args.run_dirs, args.out, x=args.x))
        return 0
    if args.out:
        out = args.out
    elif len(args.run_dirs) == 1:
        out = args.run_dirs[0]
    else:
        parents = {os.path.dirname(os.path.abspath(os.path.normpath(d))) for d in args.run_dirs}
        if len(parents) > 1:
            parser.error("the run directories have different parent directories: choose where "
                         "to write with --out DIR")
        out = parents.pop()
    names = [os.path.basename(os.path.normpath(d)) for d in args.run_dirs]
    if len(set(names)) < len(names):  # e.g. a/run and b/run: name them by their relative path
        common = os.path.commonpath([os.path.abspath(d) for d in args.run_dirs])
        names = [os.path.relpath(os.path.abspath(d), common) for d in args.run_dirs]
    rows = [read_run(d, name) for d, name in zip(args.run_dirs, names)]
    for path in write_report(rows, out, x=args.x):
        print(path)
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
