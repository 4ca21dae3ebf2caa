"""The demo model with the 2023 llm-baselines recipe (AdamW, cosine OneCycle, tied embeddings,
SwiGLU): the baseline configs/demo.py is measured against, and the small model most tests use.

    python -m minillm_jax.main --config configs/demo_2023.py
"""

from pathlib import Path

from minillm_jax.config import load_config


def get_config():
    config = load_config(Path(__file__).with_name("base.py"))
    config.model = "llama"
    config.n_layer = 4
    config.n_embd = 64
    config.n_head = 4
    config.sequence_length = 128
    config.batch_size = 8
    config.acc_steps = 1
    config.iterations = 240
    config.lr = 5e-3
    config.grad_clip = 1.0
    config.dataset = "shakespeare"
    config.eval_freq = 120
    config.eval_batches = 8
    config.log_freq = 25
    config.sample_tokens = 30
    return config
