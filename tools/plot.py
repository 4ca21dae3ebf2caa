"""Plots and a summary table for any set of run directories (sweep variants or plain runs).

    python tools/plot.py RUN_DIR [RUN_DIR ...] [--out DIR] [--x step|tokens|time]

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

import argparse
import os
import sys

from minillm_jax.plotting import X_FIELDS, plot_runs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    from minillm_jax.sweep import format_table, read_run, write_report

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
