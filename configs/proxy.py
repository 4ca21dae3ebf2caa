"""The ~10-minute CPU proxy (2 cores) with the llm-baselines default recipe: AdamW, cosine
OneCycle (warm-up 5%, final lr = lr / 10), tied embeddings, SwiGLU, lr tuned on shakespeare-dev.

    python -m minillm_jax.main --config configs/proxy.py

A Llama of 6 layers x 384 (10.6M non-embedding parameters, 30M in all) on the built-in corpus,
sequence 128, batch 16 (2,048 tokens per step). The batch is not smaller because Muon's
Newton-Schulz iterations cost about 4.2 * n_embd / tokens_per_step of a step's body FLOPs, so a
proxy with tiny batches would charge Muon an overhead no real run pays (at 166M with batch 66 x
512 it is ~7%). The configs/proxy_modern.py sibling trains the same model with the modern recipe.
"""

from pathlib import Path

from minillm_jax.config import load_config


def get_config():
    config = load_config(Path(__file__).with_name("base.py"))
    config.model = "llama"
    config.n_layer = 6
    config.n_embd = 384
    config.n_head = 6
    config.sequence_length = 128
    config.batch_size = 16
    config.acc_steps = 1
    config.iterations = 120
    config.lr = 0.002
    config.grad_clip = 1.0
    config.dataset = "shakespeare"
    config.eval_freq = 1000
    config.eval_batches = 20
    config.log_freq = 10
    config.sample_tokens = 0
    config.loss_chunk_size = 128  # CPU: exp over the logits dominates; small chunks stay in cache
    return config
