"""Do learning rates transfer across width? Final loss against each learning rate, one line per
width, from a sweep that varies `n_embd` and, one at a time around a centre point, `muon_lr`
(the hidden matrices' rate under opt=muon) and `lr` (AdamW's rate: embeddings, head, norms)
(configs/sweeps/width_lr.py).

    python -m minillm_jax.experiments.lr_transfer runs/sweeps/width_lr

reads the sweep's summary.csv and writes lr_transfer.png (two panels: loss vs muon_lr and loss
vs lr, mean over seeds with min-max bars) and lr_transfer.md (the numbers, the best rate per width
and its margin over the runner-up) next to it. The centre point is the value shared by most runs
of the other rate (a sweep varies one rate while the other stays at its centre).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections import Counter, defaultdict
from typing import Any, Sequence

import numpy as np

RATES = ("muon_lr", "lr")
LABELS = {"muon_lr": "muon_lr (Muon: hidden matrices)", "lr": "lr (AdamW: embeddings, head, norms)"}


def read_rows(out_dir: str) -> list[dict[str, Any]]:
    """Finished rows of <out_dir>/summary.csv with numbers parsed."""
    path = os.path.join(out_dir, "summary.csv")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    parsed = []
    for row in rows:
        if row.get("status") != "finished" or not row.get("val_loss"):
            continue
        parsed.append({"n_embd": int(row["n_embd"]), "lr": float(row["lr"]),
                       "muon_lr": float(row["muon_lr"]) if row.get("muon_lr") else None,
                       "val_loss": float(row["val_loss"]), "seed": row.get("seed", "0")})
    return parsed


def centre(rows: Sequence[dict[str, Any]], rate: str) -> float:
    """The value of `rate` most runs share: where it is held while the other rate varies."""
    return Counter(r[rate] for r in rows).most_common(1)[0][0]


def series(rows: Sequence[dict[str, Any]], rate: str,
           ) -> dict[int, list[tuple[float, float, float, float, int]]]:
    """{width: [(rate value, mean loss, min, max, seeds)]} over the runs that hold the other
    rate at its centre, sorted by rate."""
    other = RATES[1 - RATES.index(rate)]
    held = centre(rows, other)
    losses: dict[tuple[int, float], list[float]] = defaultdict(list)
    for r in rows:
        if r[other] == held and r[rate] is not None:
            losses[(r["n_embd"], r[rate])].append(r["val_loss"])
    out: dict[int, list] = defaultdict(list)
    for (width, value), ls in sorted(losses.items()):
        out[width].append((value, float(np.mean(ls)), min(ls), max(ls), len(ls)))
    return dict(out)


def best(points: Sequence[tuple[float, float, float, float, int]]) -> tuple[float, float]:
    """(best rate by mean loss, its margin over the runner-up in mean loss)."""
    ranked = sorted(points, key=lambda p: p[1])
    margin = ranked[1][1] - ranked[0][1] if len(ranked) > 1 else float("nan")
    return ranked[0][0], margin


def report(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: per rate, a table of mean loss (min-max over seeds) per width and value."""
    lines = []
    for rate in RATES:
        other = RATES[1 - RATES.index(rate)]
        by_width = series(rows, rate)
        if not by_width:
            continue
        values = sorted({p[0] for pts in by_width.values() for p in pts})
        lines += [f"### final loss vs {rate} ({other} held at {centre(rows, other):g})", "",
                  "| n_embd | " + " | ".join(f"{v:g}" for v in values) + " | best | margin |",
                  "|---" * (len(values) + 3) + "|"]
        for width, points in sorted(by_width.items()):
            cells = {p[0]: f"{p[1]:.4f} ({p[2]:.4f}-{p[3]:.4f}, n={p[4]})" for p in points}
            top, margin = best(points)
            lines.append(f"| {width} | " + " | ".join(cells.get(v, "") for v in values)
                         + f" | {top:g} | {margin:.4f} |")
        lines.append("")
    return "\n".join(lines)


def plot(rows: Sequence[dict[str, Any]], out: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, rate in zip(axes, RATES):
        for width, points in sorted(series(rows, rate).items()):
            x = [p[0] for p in points]
            y = np.array([p[1] for p in points])
            err = np.array([[p[1] - p[2] for p in points], [p[3] - p[1] for p in points]])
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=f"n_embd={width}")
        other = RATES[1 - RATES.index(rate)]
        ax.set(xscale="log", xlabel=LABELS[rate], ylabel="final validation loss",
               title=f"{other} held at {centre(rows, other):g}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("learning-rate transfer across width (mean over seeds, bars: min-max)")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def write_transfer_report(out_dir: str) -> list[str]:
    rows = read_rows(out_dir)
    if not rows:
        raise ValueError(f"{out_dir}/summary.csv has no finished runs yet")
    md = os.path.join(out_dir, "lr_transfer.md")
    with open(md, "w", encoding="utf-8") as f:
        f.write(report(rows) + "\n")
    return [plot(rows, os.path.join(out_dir, "lr_transfer.png")), md]


def main(argv: Sequence[str] | None = None) -> int:
    from minillm_jax.config.cli import run_command

    parser = argparse.ArgumentParser(prog="python -m minillm_jax.experiments.lr_transfer",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="the sweep's output directory (holds summary.csv)")
    args = parser.parse_args(argv)

    def work() -> None:
        paths = write_transfer_report(args.out_dir)
        print("wrote " + ", ".join(paths))
        print(open(paths[1], encoding="utf-8").read())

    return run_command(work, (ValueError, OSError))


if __name__ == "__main__":
    sys.exit(main())
