"""The first thing the trainer and gpu_check do: check that every runtime dependency imports.

On an offline image with JAX preinstalled (README "Offline GPU images"), `pip install --no-deps
-e .` succeeds even when grain or ml_collections are missing, and the first import of one would
end in a traceback from deep inside the project. This module turns that into one line: what is
missing and the two commands that fix it. Standard library only, so it runs before anything else.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

# (module to import, the pip distribution that provides it), in import order of the trainer.
REQUIRED: tuple[tuple[str, str], ...] = (
    ("numpy", "numpy"),
    ("absl", "absl-py"),
    ("jax", "jax"),
    ("flax", "flax"),
    ("optax", "optax"),
    ("orbax.checkpoint", "orbax-checkpoint"),
    ("ml_collections", "ml_collections"),
    ("grain", "grain"),
    ("tiktoken", "tiktoken"),
)
# What a missing module's import name maps to on PyPI (a package's own dependencies included).
DISTRIBUTIONS = {"array_record": "array-record", "absl": "absl-py", "orbax": "orbax-checkpoint",
                 "yaml": "PyYAML", "google": "protobuf"}
# Runtime dependencies (modules) of the packages above that an image with JAX may lack: grain
# 0.2.18's Requires-Dist is absl-py, array-record, cloudpickle, etils, numpy, portpicker and
# protobuf (orbax-checkpoint already brings etils and protobuf); ml_collections 1.1.0 needs
# absl-py and PyYAML; array-record needs etils; portpicker needs psutil.
DEPENDS = {"grain": ("array_record", "portpicker", "cloudpickle", "etils", "google.protobuf"),
           "ml_collections": ("absl", "yaml"), "array-record": ("etils",),
           "portpicker": ("psutil",)}


def missing() -> list[str]:
    """pip names of the modules that fail to import (a package's missing dependency included)."""
    absent: list[str] = []
    for module, distribution in REQUIRED:
        try:
            importlib.import_module(module)
        except ImportError as err:
            name = (getattr(err, "name", None) or module).split(".")[0]
            pip_name = DISTRIBUTIONS.get(name, name if name != module.split(".")[0]
                                         else distribution)
            if pip_name not in absent:
                absent.append(pip_name)
    for distribution in list(absent):  # what installing it with --no-deps would still lack
        for module in DEPENDS.get(distribution, ()):
            pip_name = DISTRIBUTIONS.get(module.split(".")[0], module)
            if pip_name not in absent and not _importable(module):
                absent.append(pip_name)
    return absent


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules
        return False


def message(absent: list[str]) -> str:
    """The one line printed when packages are missing."""
    names = " ".join(absent)
    return (f"error: missing Python packages: {', '.join(absent)}. Install them with `pip install "
            f"{names}`; offline, download the wheels on a networked machine (`pip download "
            f"--no-deps -d wheelhouse {names}`, same Python version and platform) and run `pip "
            f"install --no-index --no-deps wheelhouse/*.whl` here (README \"Offline GPU images\")")


def require() -> None:
    """Exits with status 2 and one line on stderr when a dependency is missing."""
    absent = missing()
    if absent:
        print(message(absent), file=sys.stderr, flush=True)
        raise SystemExit(2)
