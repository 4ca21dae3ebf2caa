"""Plan a GPU run without a GPU (minillm_jax/experiments/gpu_aot.py).

    python tools/gpu_aot.py --config configs/best_fused.py --target h100 [--max-batch] [--json OUT]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from minillm_jax.experiments.gpu_aot import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
