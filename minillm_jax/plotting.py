"""Loss and perplexity curves from metrics.jsonl files, written to PNG (matplotlib, no display)."""

from __future__ import annotations

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
