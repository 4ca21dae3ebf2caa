"""Train-step throughput: parameters, FLOPs/token, step time, tokens/s and MFU
(python -m minillm_jax.experiments.benchmark).

    python tools/bench.py --config configs/demo.py [--config.n_layer=4 ...] [--steps 5]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from minillm_jax.experiments.benchmark import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
