"""configs/proxy.py's model and data with the modern recipe's version 1
(configs/recipes/modern_v1.py), lr picked on shakespeare-dev: what configs/proxy_modern.py (v2)
is compared against, step for step (README "A modern recipe").

    python -m minillm_jax.main --config configs/proxy_modern_v1.py
"""

from pathlib import Path

from minillm_jax.config import exec_python_file, load_config


def get_config():
    config = load_config(Path(__file__).with_name("proxy.py"))
    config.update(exec_python_file(Path(__file__).parent / "recipes" / "modern_v1.py",
                                   "config").OPTIONS)
    config.lr = 0.004
    return config
