"""The CPU speed reference: GPT, 4 layers, 256 wide, 4 heads, seq 256, batch 16
(docs/llm-baselines.md#derived-figures).

    python tools/bench.py --config configs/bench_cpu.py
"""

from pathlib import Path

from minillm_jax.config import load_config


def get_config():
    config = load_config(Path(__file__).with_name("base.py"))
    config.model = "gpt"
    config.n_layer = 4
    config.n_embd = 256
    config.n_head = 4
    config.sequence_length = 256
    config.batch_size = 16
    config.acc_steps = 1
    # Layers unrolled, not scanned: the same parameters and values (stacked_blocks), without the
    # scan's per-step stacking copies of activations. 4 alternating pairs on the 2-core Xeon of
    # docs/performance.md: 0.90-0.98x the scanned step's time (median 0.95x).
    config.scan_layers = False
    return config
