"""The modern recipe, version 2: the options of v1 (configs/recipes/modern_v1.py: Muon, untied
head, ReLU^2 MLP, QK-norm, warm-up / constant / linear decay to ~zero) plus the speedrun
techniques the v2 ablations kept (README "A modern recipe"; configs/sweeps/ablation_demo_v2.py,
3 seeds each on the demo, shakespeare-dev split, never the validation plays):

- decoupled weight decay on the Muon group (muon_weight_decay; v1 had none there);
- NorMuon's per-neuron normalisation of Muon's orthogonalised update (muon_normuon);
- smear: a gated share of the previous token's embedding added to each embedding (smear);
- sliding-window attention of a quarter of the sequence in every other layer
  (attention_window, attention_window_layers="alternate").

Measured not to help at this scale, and left off: Polar Express coefficients, cautious weight
decay (against plain decay of the same strength), value embeddings, U-net skips.

Not a runnable config: configs/demo.py (CPU quick start), configs/proxy_modern.py (the CPU proxy)
and configs/modern.py (166M, GPU) apply OPTIONS on top of their own model and data; the window
is in tokens, a quarter of their 128-token sequence (configs/modern.py scales it to its own).
"""

from pathlib import Path

from minillm_jax.config import exec_python_file

V1 = exec_python_file(Path(__file__).with_name("modern_v1.py"), "config").OPTIONS

OPTIONS = dict(
    V1,
    muon_weight_decay=0.5,  # decoupled, times the Muon lr: at most 1% per step at 0.02
    muon_normuon=True,
    smear=True,
    attention_window=32,  # tokens: a quarter of the 128-token sequence of demo.py / proxy.py
    attention_window_layers="alternate",  # even layers windowed, odd layers full
)
