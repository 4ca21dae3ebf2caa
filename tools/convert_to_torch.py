"""Export a checkpoint to PyTorch (python -m minillm_jax.export.to_torch; options there).

    python tools/convert_to_torch.py --workdir runs/demo [--step N] --format llm-baselines --out model.pt
    python tools/convert_to_torch.py --workdir runs/demo --format hf --out hf_model/ [--custom-code]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from minillm_jax.export.to_torch import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
