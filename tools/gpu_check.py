"""The one-command accelerator acceptance check (minillm_jax/experiments/gpu_check.py).

    python tools/gpu_check.py [--out runs/gpu_check] [--budget-s 450]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from minillm_jax.experiments.gpu_check import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
