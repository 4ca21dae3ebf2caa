"""configs/proxy.py's model and data with the modern recipe (configs/recipes/modern.py), lr picked
on shakespeare-dev.

    python -m minillm_jax.main --config configs/proxy_modern.py
"""

from pathlib import Path

from minillm_jax.config import exec_python_file, load_config


def get_config():
    config = load_config(Path(__file__).with_name("proxy.py"))
    config.update(exec_python_file(Path(__file__).parent / "recipes" / "modern.py", "config").OPTIONS)
    config.lr = 0.004
    return config
