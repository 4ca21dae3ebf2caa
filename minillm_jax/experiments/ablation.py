"""Multi-seed ablation statistics and plots: is a variant really better than the baseline?

A single run per variant cannot separate an architecture change from seed noise, so an ablation
trains every variant with several seeds under the same wall-clock budget, each in
`<out>/<variant>/seed<k>/metrics.jsonl`. This module turns those logs into

* per-variant summaries of the final validation loss (mean, sample std, 95% t-interval),
* paired differences against the baseline (same seed = same data order and init stream, so the
  per-seed difference cancels most of the shared noise and needs far fewer seeds),
* the training time each variant needs to reach the baseline's mean final loss, and the
  resulting speed-up (the question a time-budgeted ablation actually asks),
* a CSV / Markdown table and PNG plots of validation loss vs wall-clock and vs FLOPs.

Everything here is pure numpy on lists of metrics records (no JAX, no scipy); matplotlib is
imported only by `plot_ablation`.

metrics.jsonl records used: periodic evals (`val_loss` with `step`, `train_time_s`, `flops`,
`tokens`) and the final eval (`final_val_loss`, ideally with `train_time_s`, `flops`, `tokens`).
A record missing an x quantity borrows it from another record at the same step (the same step has
the same cumulative training time, FLOPs and tokens); points without it are left out.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import warnings
from typing import Any, Mapping, Sequence

import numpy as np

from minillm_jax.experiments.runs import SEED_SUMMARY_FIELDS, write_summary, write_text
from minillm_jax.experiments.stats import paired_difference, summarize

Records = Sequence[Mapping[str, Any]]
Runs = Mapping[str, Mapping[int, Records]]

X_KEYS = ("train_time_s", "flops", "tokens", "step")
X_LABELS = {"train_time_s": "training wall-clock (s, evaluation excluded)",
            "flops": "training FLOPs (cumulative)", "tokens": "training tokens",
            "step": "step"}
ABLATION_CSV = "ablation.csv"
ABLATION_MD = "ablation.md"
ABLATION_PLOTS = {"train_time_s": "ablation_val_loss_vs_time.png",
                  "flops": "ablation_val_loss_vs_flops.png"}


# ---------------------------------------------------------------------------------------------
# Curves


def _check_x(x: str) -> None:
    if x not in X_KEYS:
        raise ValueError(f"x must be one of {X_KEYS}, got {x!r}")


def curve(records: Records, x: str = "train_time_s") -> tuple[np.ndarray, np.ndarray]:
    """(x, val_loss) of a run's evals: periodic `val_loss` records plus the final eval, by step.

    One point per step: the final eval wins over a periodic one at the same step (it may be the
    larger, full evaluation), otherwise the later line wins (a resumed run repeats steps). A
    record without x takes it from another record at the same step; points still without it are
    left out, so a run that never logged x gives empty arrays.
    """
    _check_x(x)
    x_at_step: dict[int, float] = {}
    for r in records:
        if x in r and r[x] is not None and "step" in r:
            x_at_step[int(r["step"])] = float(r[x])
    evals: dict[int, tuple[int, float, float | None]] = {}  # step -> (priority, loss, x)
    for r in records:
        if "step" not in r:
            continue
        step = int(r["step"])
        if r.get("final_val_loss") is not None:
            priority, loss = 1, r["final_val_loss"]
        elif r.get("val_loss") is not None:
            priority, loss = 0, r["val_loss"]
        else:
            continue
        if step in evals and evals[step][0] > priority:
            continue
        value = float(r[x]) if r.get(x) is not None else x_at_step.get(step)
        if x == "step":
            value = float(step)
        evals[step] = (priority, float(loss), value)
    points = [(v, loss) for step, (_, loss, v) in sorted(evals.items()) if v is not None]
    if not points:
        return np.zeros(0), np.zeros(0)
    xs, ys = zip(*points)
    return np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)


def has_x(records: Records, x: str) -> bool:
    """Whether the run's eval curve has any point with x (False: e.g. a run without FLOPs)."""
    return curve(records, x)[0].size > 0


def time_to_reach(records: Records, target_loss: float,
                  x: str = "train_time_s") -> float | None:
    """First x at which the val-loss curve is <= target_loss, None if it never gets there.

    Linear interpolation between the two evals that bracket the crossing (the loss is only known
    at eval points; between them a straight line is the least-assuming estimate). A first point
    already at/below the target returns that point's x.
    """
    xs, ys = curve(records, x)
    for i, (xi, yi) in enumerate(zip(xs, ys)):
        if not yi <= target_loss:  # NaN never counts as reached
            continue
        if i == 0 or not math.isfinite(ys[i - 1]) or ys[i - 1] == yi:
            return float(xi)
        frac = (ys[i - 1] - target_loss) / (ys[i - 1] - yi)
        return float(xs[i - 1] + frac * (xi - xs[i - 1]))
    return None


def mean_curve(curves: Sequence[tuple[np.ndarray, np.ndarray]],
               num: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise mean of curves interpolated onto a common grid over the x range they all cover.

    Only the overlap is used so the mean never extrapolates a seed; empty arrays when the curves
    do not overlap (or there are none). A single curve is returned as is.
    """
    curves = [(np.asarray(cx, float), np.asarray(cy, float)) for cx, cy in curves if len(cx)]
    if not curves:
        return np.zeros(0), np.zeros(0)
    if len(curves) == 1:
        return curves[0]
    lo = max(float(cx[0]) for cx, _ in curves)
    hi = min(float(cx[-1]) for cx, _ in curves)
    if not hi > lo:
        return np.zeros(0), np.zeros(0)
    grid = np.linspace(lo, hi, num)
    return grid, np.mean([np.interp(grid, cx, cy) for cx, cy in curves], axis=0)


def variant_mean_curve(seed_records: Mapping[int, Records], x: str = "train_time_s",
                       num: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Mean val-loss curve of one variant over its seeds (see mean_curve).

    The mean covers only the x range all its seeds reach, so an unfinished (crashed or still
    running) seed would cut it short: it averages the finished seeds when there are any.
    """
    curves = {s: curve(recs, x) for s, recs in seed_records.items()}
    done = [c for s, c in curves.items() if final_val_loss(seed_records[s]) is not None]
    present = [c for c in curves.values() if len(c[0])]
    return mean_curve([c for c in done if len(c[0])] or present, num)


# ---------------------------------------------------------------------------------------------
# Run-level quantities


def final_val_loss(records: Records) -> float | None:
    """The run's final eval loss (last `final_val_loss` record), None for an unfinished run."""
    for r in reversed(records):
        if r.get("final_val_loss") is not None:
            return float(r["final_val_loss"])
    return None


def total_train_time(records: Records) -> float | None:
    """Training wall-clock of a finished run: the final record's train_time_s, else the largest
    train_time_s logged (cumulative, so the last training log). None if unfinished or unknown."""
    final = [r for r in records if r.get("final_val_loss") is not None]
    if not final:
        return None
    if final[-1].get("train_time_s") is not None:
        return float(final[-1]["train_time_s"])
    times = [float(r["train_time_s"]) for r in records if r.get("train_time_s") is not None]
    return max(times) if times else None


def load_runs(out_dir: str, variants: Sequence[str] | None = None) -> dict[str, dict[int, list]]:
    """{variant: {seed: records}} from `<out_dir>/<variant>/seed<k>/metrics.jsonl`."""
    runs: dict[str, dict[int, list]] = {}
    names = variants if variants is not None else sorted(
        d for d in os.listdir(out_dir) if os.path.isdir(os.path.join(out_dir, d)))
    for name in names:
        vdir = os.path.join(out_dir, name)
        if not os.path.isdir(vdir):
            continue
        for sub in sorted(os.listdir(vdir)):
            m = re.fullmatch(r"seed(\d+)", sub)
            path = os.path.join(vdir, sub, "metrics.jsonl")
            if m and os.path.isfile(path):
                with open(path, encoding="utf-8") as f:
                    records = [json.loads(line) for line in f if line.strip()]
                runs.setdefault(name, {})[int(m.group(1))] = records
    return runs


# ---------------------------------------------------------------------------------------------
# Table


def _nan_to_none(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def ablation_table(runs: Runs, baseline: str) -> list[dict[str, Any]]:
    """One row per variant (baseline first): final val loss over seeds, paired difference vs the
    baseline, and the training time to reach the baseline's mean final val loss.

    Row keys: variant, is_baseline, seeds (all seeds given), n_seeds (finished ones),
    unfinished_seeds, final_val_loss_per_seed (aligned with seeds, None if unfinished),
    final_val_loss_mean/_std/_ci95, diff_mean/_std/_ci95/_low/_high, n_pairs, dropped_seeds
    (None diffs on the baseline row), target_loss (baseline mean final val loss),
    time_to_target_per_seed (None where the seed never reaches it), n_reached,
    time_to_target_mean (mean over the seeds that reached it: read it together with n_reached),
    train_time_mean (mean total train_time_s of finished seeds) and
    speedup = baseline train_time_mean / time_to_target_mean (>1: reaches the baseline's final
    quality faster). NaN statistics are reported as None.
    """
    if baseline not in runs:
        raise KeyError(f"baseline {baseline!r} is not among the variants {list(runs)}")
    finals = {v: {s: final_val_loss(recs) for s, recs in seeds.items()}
              for v, seeds in runs.items()}
    finished = {v: {s: f for s, f in fs.items() if f is not None} for v, fs in finals.items()}
    base_summary = summarize(finished[baseline].values())
    target = _nan_to_none(base_summary.mean)
    times = {v: [t for t in (total_train_time(r) for r in seeds.values()) if t is not None]
             for v, seeds in runs.items()}
    base_time = _nan_to_none(summarize(times[baseline]).mean)

    rows = []
    for variant in [baseline, *[v for v in runs if v != baseline]]:
        seeds = sorted(runs[variant])
        s = summarize(finished[variant].values())
        is_base = variant == baseline
        d = None if is_base else paired_difference(finished[variant], finished[baseline])
        reach = [time_to_reach(runs[variant][k], target) if target is not None else None
                 for k in seeds]
        reached = [t for t in reach if t is not None]
        t_mean = float(np.mean(reached)) if reached else None
        rows.append({
            "variant": variant,
            "is_baseline": is_base,
            "seeds": seeds,
            "n_seeds": s.n,
            "unfinished_seeds": [k for k in seeds if finals[variant][k] is None],
            "final_val_loss_per_seed": [finals[variant][k] for k in seeds],
            "final_val_loss_mean": _nan_to_none(s.mean),
            "final_val_loss_std": _nan_to_none(s.std),
            "final_val_loss_ci95": _nan_to_none(s.ci95),
            "diff_mean": None if d is None else _nan_to_none(d.mean),
            "diff_std": None if d is None else _nan_to_none(d.std),
            "diff_ci95": None if d is None else _nan_to_none(d.ci95),
            "diff_low": None if d is None else _nan_to_none(d.low),
            "diff_high": None if d is None else _nan_to_none(d.high),
            "n_pairs": None if d is None else d.n,
            "dropped_seeds": None if d is None else list(d.dropped_seeds),
            "target_loss": target,
            "time_to_target_per_seed": reach,
            "n_reached": len(reached),
            "time_to_target_mean": t_mean,
            "train_time_mean": _nan_to_none(summarize(times[variant]).mean),
            "speedup": (base_time / t_mean if base_time is not None and t_mean else None),
        })
    return rows


def write_csv(rows: Sequence[Mapping[str, Any]], path: str) -> str:
    """The table as CSV (lists as JSON, None as empty); returns path."""
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else json.dumps(v) if isinstance(v, (list, tuple))
                                 else v) for k, v in row.items()})
    return path


def _num(v: float | None, fmt: str) -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else fmt.format(v)


def format_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table of the ablation rows, with a note on what the time columns mean."""
    header = ["variant", "seeds", "final val loss (mean ± std)", "Δ vs baseline [95% CI]",
              "time to baseline loss (s)", "speed-up"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    base = next((r for r in rows if r.get("is_baseline")), None)
    for r in rows:
        name = f"{r['variant']} (baseline)" if r.get("is_baseline") else r["variant"]
        seeds = f"{r['n_seeds']}/{len(r['seeds'])}"
        loss = (_num(r["final_val_loss_mean"], "{:.4f}") + " ± "
                + _num(r["final_val_loss_std"], "{:.4f}")) if r["n_seeds"] else "—"
        if r.get("is_baseline"):
            diff = "—"
        else:
            diff = (_num(r["diff_mean"], "{:+.4f}") + " [" + _num(r["diff_low"], "{:+.4f}")
                    + ", " + _num(r["diff_high"], "{:+.4f}") + "]")
            if r["n_pairs"] is not None and r["n_pairs"] < r["n_seeds"]:
                diff += f" ({r['n_pairs']} pairs)"
        reached = f"{r['n_reached']}/{len(r['seeds'])}"
        time = _num(r["time_to_target_mean"], "{:.1f}") + f" ({reached})"
        speed = _num(r["speedup"], "{:.2f}×")
        lines.append("| " + " | ".join([name, seeds, loss, diff, time, speed]) + " |")
    if base is not None:
        lines.append("")
        lines.append(
            f"Time to baseline loss: training seconds (evaluation excluded) until the val loss "
            f"first reaches the baseline's mean final val loss "
            f"({_num(base['target_loss'], '{:.4f}')}), interpolated between evals, mean over the "
            f"seeds that reach it (count in brackets). Speed-up: baseline mean train time "
            f"({_num(base['train_time_mean'], '{:.1f}')} s) / that time. Δ: paired by seed, "
            f"variant − baseline (negative = lower loss), t-interval.")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Plots


def plot_ablation(runs: Runs, out_dir: str, baseline: str | None = None) -> list[str]:
    """Val loss vs training wall-clock and vs FLOPs: one colour per variant, a thin line per seed
    (dotted if unfinished) and a thick mean over the finished seeds on the x range they all
    cover. Returns the PNG paths.

    Runs without the x quantity are skipped with a warning (and named in the title); the FLOPs
    plot is not written at all when no run logged `flops`. With `baseline`, a dashed line marks
    the baseline's mean final val loss (the target of the table's time column).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from minillm_jax.experiments.plotting import finish_figure

    os.makedirs(out_dir, exist_ok=True)
    target = None
    if baseline is not None and baseline in runs:
        finals = [f for f in (final_val_loss(r) for r in runs[baseline].values()) if f is not None]
        target = float(np.mean(finals)) if finals else None
    paths = []
    for x, filename in ABLATION_PLOTS.items():
        curves = {v: {s: curve(recs, x) for s, recs in seeds.items()} for v, seeds in runs.items()}
        missing = [f"{v}/seed{s}" for v, cs in curves.items() for s, c in cs.items()
                   if not len(c[0])]
        if all(not len(c[0]) for cs in curves.values() for c in cs.values()):
            warnings.warn(f"no run logged {x!r}: validation loss vs {x} not plotted "
                          f"({filename} not written)", stacklevel=2)
            continue
        if missing:
            warnings.warn(f"runs without {x!r} left out of {filename}: {', '.join(missing)}",
                          stacklevel=2)
        fig, ax = plt.subplots(figsize=(8, 5))
        for i, (variant, seed_curves) in enumerate(curves.items()):
            colour = f"C{i % 10}"
            done = {s for s, recs in runs[variant].items() if final_val_loss(recs) is not None}
            present = {s: c for s, c in sorted(seed_curves.items()) if len(c[0])}
            for s, (cx, cy) in present.items():
                ax.plot(cx, cy, "-" if s in done else ":", color=colour, lw=0.8, alpha=0.35)
            mx, my = variant_mean_curve(runs[variant], x)
            n_done = sum(s in done for s in present)
            label = f"{variant} ({n_done} seed{'s' if n_done != 1 else ''}"
            label += f" + {len(present) - n_done} unfinished)" if n_done < len(present) else ")"
            if variant == baseline:
                label += ", baseline"
            if len(mx):
                ax.plot(mx, my, "-", color=colour, lw=2.5, label=label)
            elif present:  # seeds that do not overlap: no mean, still label the colour
                ax.plot([], [], "-", color=colour, lw=2.5, label=label + ", no common range")
        if target is not None:
            ax.axhline(target, color="gray", ls="--", lw=1,
                       label=f"baseline mean final val loss {target:.4f}")
        title = f"validation loss vs {'FLOPs' if x == 'flops' else 'wall-clock'}"
        title += " (thin: seeds, dotted: unfinished, thick: mean)"
        if missing:
            more = " …" if len(missing) > 6 else ""
            title += f"\nno {x} logged: {', '.join(missing[:6])}{more}"
        ax.set(xlabel=X_LABELS[x], ylabel="validation loss (nats/token)", title=title)
        paths.append(finish_figure(fig, ax, os.path.join(out_dir, filename)))
    return paths


# ---------------------------------------------------------------------------------------------
# The report


def write_report(rows: Sequence[dict[str, Any]], out_dir: str,
                 planned: Mapping[str, Sequence[int]],
                 baseline: str) -> tuple[list[str], str]:
    """A multi-seed sweep's summary.csv, ablation.csv/.md and plots; returns (paths, Markdown).

    `planned`: variant -> its seeds, in table order. Statistics come from the runs'
    metrics.jsonl. A planned seed without metrics (pending, or failed before its
    first log) enters the table as unfinished, so the seeds column (finished/planned) shows it
    instead of it silently vanishing; seed directories outside the plan (left by an earlier,
    larger sweep into the same --out) are not counted, so the table matches summary.csv.
    """
    os.makedirs(out_dir, exist_ok=True)
    logged = load_runs(out_dir, list(planned))
    logged = {v: {k: recs for k, recs in by_seed.items() if k in planned[v]}
              for v, by_seed in logged.items()}
    table_runs = {v: {k: logged.get(v, {}).get(k, []) for k in seeds}
                  for v, seeds in planned.items()}
    table = ablation_table(table_runs, baseline)
    markdown = format_markdown(table)
    return [write_summary(rows, out_dir, SEED_SUMMARY_FIELDS),
            write_csv(table, os.path.join(out_dir, ABLATION_CSV)),
            write_text(os.path.join(out_dir, ABLATION_MD), markdown + "\n"),
            *plot_ablation({v: r for v, r in logged.items() if r}, out_dir,
                                    baseline)], markdown
