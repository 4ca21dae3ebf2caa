"""Import an llm-baselines PyTorch state dict as a checkpoint (python -m
minillm_jax.export.from_torch; options there).

    python tools/convert_from_torch.py --state-dict ckpt.pt --args model.args.json --workdir runs/imported
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from minillm_jax.export.from_torch import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
