"""Compute budget -> compute-optimal model size, tokens and configs (python -m minillm_jax.experiments.planner).

    python tools/plan.py --accelerator a100 --hours 3 [--mfu 0.4 | --measure configs/X.py]
    python tools/plan.py --peak-tflops 500 --devices 8 --hours 24 --mfu 0.45
    python tools/plan.py --hours 3 --measure-aot configs/best_fused.py --target h100
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from minillm_jax.experiments.planner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
