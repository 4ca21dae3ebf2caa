"""`python -m minillm_jax.sweep`: the sweep command (minillm_jax/experiments/sweep.py)."""

import sys

from minillm_jax.experiments.sweep import main

if __name__ == "__main__":
    sys.exit(main())
