"""How a command starts a child Python process of its own: the child imports the same copy of
minillm_jax as its parent (not another one installed or on the child's path) and runs in the
caller's directory, so every relative path means what it meant on the caller's command line.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the directory holding minillm_jax/


def child_env() -> dict[str, str]:
    """os.environ with this minillm_jax's root first on PYTHONPATH."""
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE_ROOT)] + rest)}
