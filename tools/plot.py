"""Loss / perplexity curves of one or more runs to PNG.

    python tools/plot.py RUN_DIR [RUN_DIR ...] [--out curves.png]   (default: RUN_DIR/curves.png)
"""

import argparse
import os

from minillm_jax.plotting import plot_runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", help="run directories holding metrics.jsonl")
    parser.add_argument("--out", default="", help="PNG path")
    args = parser.parse_args()
    for run_dir in args.run_dirs:
        if not os.path.exists(os.path.join(run_dir, "metrics.jsonl")):
            parser.error(f"{run_dir} has no metrics.jsonl: pass a run directory (the workdir)")
    out = args.out or os.path.join(args.run_dirs[0], "curves.png")
    print(plot_runs(args.run_dirs, out))


if __name__ == "__main__":
    main()
