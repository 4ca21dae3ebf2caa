"""Config files: executing a configs/*.py (or sweep) file, and configs/base.py, the one place
every default lives.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from typing import Any

import ml_collections

from minillm_jax.config.checks import ConfigError

BASE_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "base.py"


def load_config(path: str | os.PathLike) -> ml_collections.ConfigDict:
    """Executes a config file and returns its `get_config()`.

    Config files use this to derive from a sibling (`load_config(Path(__file__).with_name("base.py"))`)
    without needing configs/ on sys.path.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    return exec_python_file(path, "config").get_config()


def exec_python_file(path: Path, kind: str) -> Any:
    """Imports a config or sweep file by path, as a module of its own."""
    spec = importlib.util.spec_from_file_location(f"_minillm_{kind}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def base_defaults() -> dict[str, Any]:
    """configs/base.py as a plain dict: the single source of every default. A fresh dict each
    call, so that a caller that edits it cannot change the defaults everyone else reads."""
    return dict(_read_base())


@functools.lru_cache(maxsize=1)
def _read_base() -> dict[str, Any]:
    if not BASE_CONFIG.is_file():
        raise ConfigError(f"{BASE_CONFIG} is missing: minillm_jax runs from a checkout of the "
                          "repository (pip install -e .), which holds configs/")
    return load_config(BASE_CONFIG).to_dict()
