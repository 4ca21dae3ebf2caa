"""The modern recipe (v2) at the 166M scale of configs/best.py, for the GPU run: Muon on the hidden
matrices (with decoupled weight decay and NorMuon's per-neuron normalisation), untied head, ReLU^2
MLP, QK-norm, smear, sliding-window attention (128 of the 512 tokens) in every other layer,
warm-up / constant / linear decay to ~zero over the last half (configs/recipes/modern.py), on
configs/best_fused.py (bfloat16 matmuls with a float32 residual stream, cuDNN fused attention,
residual and embedding dropout 0.05).

    python -m minillm_jax.main --config configs/modern.py --config.budget_minutes=180

Options and the schedule were chosen by the CPU ablations (README "A modern recipe"). The two
learning rates come from configs/sweeps/width_lr.py (shakespeare-dev, 4 layers, widths 128 / 256
/ 512, 60 steps of 2,048 tokens; 2 seeds at 128 and 256, one at 512; docs/results/width_lr/),
not from runs at this scale. Final dev loss, mean over seeds:

- `muon_lr` 0.01 (was 0.02): 0.01 beat 0.02 at every width (5.482 vs 5.509, 5.135 vs 5.193,
  5.100 vs 5.145), in each seed, and 0.04 was worse again (128 and 256). The best value did not
  move with width, as Muon's shape-normalised update promises, but 0.01 is the grid's lowest
  point: the optimum may be lower still.
- `lr` (AdamW on embeddings, head and norms) 2e-3 (was 1e-3): the best of 1e-3 / 3e-3 / 1e-2
  fell with width, 1e-2 at 128 and 256 (by 0.381 and 0.147 over 3e-3) and 3e-3 at 512 (by
  0.036, one seed), which is what an lr scaled as 1 / width predicts; 3e-3 x 512 / 768 = 2e-3 at
  this width.

Weak evidence, stated as such: two seeds at most, three widths at 4 layers, 60 steps, while this
run is 18 layers deep and about 400 times longer. Untying adds a second 50304 x 768 matrix (38.6M
parameters, 204.7M in all) at no extra FLOPs per token.
"""

from pathlib import Path

from minillm_jax.config import exec_python_file, load_config


def get_config():
    config = load_config(Path(__file__).with_name("best_fused.py"))
    config.update(exec_python_file(Path(__file__).parent / "recipes" / "modern.py", "config").OPTIONS)
    config.muon_lr = 0.01
    config.lr = 2e-3
    # v2's windowed layers see a quarter of the sequence, as on the CPU proxies (128 of 512
    # tokens here; not tuned at this scale)
    config.attention_window = config.sequence_length // 4
    return config
