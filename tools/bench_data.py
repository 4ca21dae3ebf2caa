"""Data pipeline throughput: loader tokens/s and prepare MB/s (python -m minillm_jax.data.bench).

    python tools/bench_data.py DATA_DIR [--batch-size 66] [--seq-len 512] [--steps 2000]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from minillm_jax.data.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
