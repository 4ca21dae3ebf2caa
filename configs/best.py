"""The winning Mini-LLM-Challenge recipe: 166M Llama, 18x768, 12 heads, tied embeddings
(docs/llm-baselines.md#sources-and-versions).

Everything not set here is the llm-baselines default (configs/base.py): lr 1e-3, cosine OneCycle,
warmup 5%, wd 0.1, betas 0.9/0.95, seq 512, vocab 50304. Matmuls run in bfloat16 on a GPU or TPU
(compute_dtype=auto; --config.compute_dtype=float32 forces float32), as llm-baselines' autocast.
"""

from pathlib import Path

from minillm_jax.config import load_config


def get_config():
    config = load_config(Path(__file__).with_name("base.py"))
    config.model = "llama"
    config.n_layer = 18
    config.n_embd = 768
    config.n_head = 12
    config.batch_size = 66
    config.acc_steps = 1
    config.dropout = 0.05
    config.grad_clip = 1.0
    config.seed = 123
    config.iterations = 28000
    config.eval_freq = 200
    config.dataset = "slimpajama"
    # one saved copy of each activation the backward needs (python tools/gpu_aot.py: 29.3 -> 13.4
    # GiB of temporaries for best_fused.py on an H100, predicted step 116 -> 92 ms;
    # docs/performance.md "The GPU step, compiled without a GPU")
    config.remat = "save_named"
    return config
