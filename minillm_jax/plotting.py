"""Loss and perplexity curves from metrics.jsonl files, and sweep plots, written to PNG
(matplotlib, no display)."""

from __future__ import annotations

import math
import os
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from minillm_jax.metrics import read_metrics  # noqa: E402


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if key in r]
    return [p[0] for p in points], [p[1] for p in points]


def plot_runs(run_dirs: Sequence[str], out: str) -> str:
    """Train/val loss (left) and val perplexity (right) against step for each run."""
    fig, (ax_loss, ax_ppl) = plt.subplots(1, 2, figsize=(12, 4.5))
    for run_dir in run_dirs:
        records = read_metrics(run_dir)
        label = os.path.basename(os.path.normpath(run_dir))
        steps, train = _series(records, "train_loss")
        line, = ax_loss.plot(steps, train, alpha=0.5, label=f"{label} train")
        steps, val = _series(records, "val_loss")
        ax_loss.plot(steps, val, "o-", color=line.get_color(), label=f"{label} val")
        steps, ppl = _series(records, "val_perplexity")
        ax_ppl.plot(steps, ppl, "o-", color=line.get_color(), label=label)
    ax_loss.set(xlabel="step", ylabel="loss (nats/token)", title="loss")
    ax_ppl.set(xlabel="step", ylabel="perplexity", title="validation perplexity", yscale="log")
    for ax in (ax_loss, ax_ppl):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


# ---------------------------------------------------------------------------------------------
# Sweep plots. `runs` are summary rows (minillm_jax.sweep.read_run): dicts with name, run_dir,
# params, n_layer, n_embd, steps, tokens, val_loss, val_perplexity ("" where unknown).

SWEEP_PLOTS = {"val_loss": "val_loss_vs_step.png", "perplexity": "perplexity_vs_params.png",
               "width_depth": "width_vs_depth.png", "curves": "curves.png"}


def _known(row: dict, *keys: str) -> bool:
    return all(row.get(k, "") not in ("", None) for k in keys)


def _finish(fig, ax, out: str) -> str:
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


def plot_val_loss(runs: Sequence[dict], out: str) -> str:
    """Validation loss against step for every run (periodic evals; a star marks the final eval)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for row in runs:
        run_dir = row.get("run_dir", "")
        if not run_dir or not os.path.exists(os.path.join(run_dir, "metrics.jsonl")):
            continue
        records = read_metrics(run_dir)
        by_step = {r["step"]: r["val_loss"] for r in records if "val_loss" in r}  # last wins
        final = [(r["step"], r["final_val_loss"]) for r in records if "final_val_loss" in r]
        steps = sorted(by_step)
        line, = ax.plot(steps, [by_step[s] for s in steps], "o-", ms=3, label=row["name"])
        if final:
            step, loss = final[-1]
            ax.plot(step, loss, "*", ms=11, color=line.get_color())
            if steps and steps[-1] < step:
                ax.plot([steps[-1], step], [by_step[steps[-1]], loss], ":",
                        color=line.get_color())
    ax.set(xlabel="step", ylabel="validation loss (nats/token)",
           title="validation loss (line: periodic evals, star: final eval)")
    return _finish(fig, ax, out)


def plot_perplexity_vs_params(runs: Sequence[dict], out: str) -> str:
    """Final validation perplexity against parameters, with the parametric fit's prediction
    exp(L(N, D)) at the runs' median token count (on a second axis when it is off the data's
    scale: the fit is for MassiveText, not for every corpus)."""
    from minillm_jax.planner import predicted_loss

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
    return _finish(fig, ax, out)


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
    return _finish(fig, ax, out)


def plot_sweep(runs: Sequence[dict], out_dir: str) -> list[str]:
    """All sweep plots into out_dir; returns their paths."""
    paths = [
        plot_val_loss(runs, os.path.join(out_dir, SWEEP_PLOTS["val_loss"])),
        plot_perplexity_vs_params(runs, os.path.join(out_dir, SWEEP_PLOTS["perplexity"])),
        plot_width_depth(runs, os.path.join(out_dir, SWEEP_PLOTS["width_depth"])),
    ]
    run_dirs = [r["run_dir"] for r in runs
                if r.get("run_dir") and os.path.exists(os.path.join(r["run_dir"], "metrics.jsonl"))]
    if run_dirs:
        paths.append(plot_runs(run_dirs, os.path.join(out_dir, SWEEP_PLOTS["curves"])))
    return paths
