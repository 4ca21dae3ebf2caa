"""The organisers' 208M GPT baseline: GPTBase, 24 layers
(docs/llm-baselines.md#sources-and-versions)."""

from pathlib import Path

from minillm_jax.config import load_config


def get_config():
    config = load_config(Path(__file__).with_name("base.py"))
    config.model = "gpt"
    config.n_layer = 24
    config.batch_size = 50
    config.acc_steps = 4
    config.dropout = 0.05
    return config
