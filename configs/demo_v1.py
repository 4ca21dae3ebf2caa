"""The quick-start demo (configs/demo.py's model, data, steps and lr) with the modern recipe's
version 1 (configs/recipes/modern_v1.py): the baseline of the v2 ablations.

    python -m minillm_jax.main --config configs/demo_v1.py
"""

from pathlib import Path

from minillm_jax.config import exec_python_file, load_config


def get_config():
    config = load_config(Path(__file__).with_name("demo_2023.py"))
    config.update(exec_python_file(Path(__file__).parent / "recipes" / "modern_v1.py",
                                   "config").OPTIONS)
    config.lr = 2e-2
    config.iterations = 210
    config.loss_chunk_size = 128
    return config
