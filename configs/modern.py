"""The modern recipe at the 166M scale of configs/best.py, for the GPU run: Muon on the hidden
matrices, untied head, ReLU^2 MLP, QK-norm, warm-up / constant / linear decay to ~zero over the
last half (configs/recipes/modern.py), on configs/best_fused.py (bfloat16 matmuls with a float32
residual stream, cuDNN fused attention, residual and embedding dropout 0.05).

    python -m minillm_jax.main --config configs/modern.py --config.budget_minutes=180

Options and the schedule were chosen by the CPU ablations (README "A modern recipe"); the lrs are
transferred, not tuned at this scale: `muon_lr` 0.02 is Muon's usual shape-normalised rate, and
`lr` (AdamW on embeddings, head and norms) stays best.py's 1e-3. Untying adds a second
50304 x 768 matrix (38.6M parameters, 204.7M in all) at no extra FLOPs per token.
"""

from pathlib import Path

from minillm_jax.config import exec_python_file, load_config


def get_config():
    config = load_config(Path(__file__).with_name("best_fused.py"))
    config.update(exec_python_file(Path(__file__).parent / "recipes" / "modern.py", "config").OPTIONS)
    return config
