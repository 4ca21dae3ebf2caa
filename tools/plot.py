"""Plots and a summary table for run directories (python -m minillm_jax.experiments.plotting).

    python tools/plot.py RUN_DIR [RUN_DIR ...] [--out DIR] [--x step|tokens|time]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from minillm_jax.experiments.plotting import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
