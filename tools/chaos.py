"""Chaos test of checkpointing and resume (python -m minillm_jax.experiments.chaos).

    python tools/chaos.py --seed 0 --kills 21 --sigterms 3 [--budget-s 1800] [--json out.json]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from minillm_jax.experiments.chaos import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
