"""Compute budget -> compute-optimal model size, tokens and concrete configs (Chinchilla).

    python tools/plan.py --accelerator a100 --hours 3 [--mfu 0.4 | --measure configs/X.py]
    python tools/plan.py --peak-tflops 500 --devices 8 --hours 24 --mfu 0.45

See minillm_jax/planner.py for the formulas.
"""

import sys

from minillm_jax.planner import main

if __name__ == "__main__":
    sys.exit(main())
