"""configs/proxy.py's model and data with the modern recipe v2 (configs/recipes/modern.py), both lrs
picked on shakespeare-dev (configs/sweeps/proxy_lr_v2.py, at the 24 steps of
configs/sweeps/proxy_speedup_v2.py: lr 4e-3 / 8e-3 / 1.6e-2 gave 5.757 / 5.724 / 5.768 with
muon_lr 0.02, and 8e-3 with muon_lr 0.01, as the demo's tuning chose, 5.672; one seed each).

    python -m minillm_jax.main --config configs/proxy_modern.py
"""

from pathlib import Path

from minillm_jax.config import exec_python_file, load_config


def get_config():
    config = load_config(Path(__file__).with_name("proxy.py"))
    config.update(exec_python_file(Path(__file__).parent / "recipes" / "modern.py", "config").OPTIONS)
    config.lr = 8e-3
    config.muon_lr = 0.01
    return config
