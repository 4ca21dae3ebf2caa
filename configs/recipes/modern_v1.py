"""The modern recipe, version 1 (kept so that v1 and v2 can be compared): Muon, untied head,
ReLU^2 MLP, QK-norm and warm-up / constant / linear decay to ~zero over the last half.
configs/recipes/modern.py (v2) adds the options of the v2 ablations (README "A modern recipe").

Not a runnable config: configs/demo_v1.py and configs/sweeps/ablation_demo_v2.py apply OPTIONS on
top of their own model and data.
"""

OPTIONS = dict(
    opt="muon",  # Muon (muon_lr) on the hidden matrices, AdamW (lr) on embeddings, head and norms
    tie_embeddings=False,
    mlp_activation="relu2",
    qk_norm=True,
    scheduler="wsd",  # warm-up, constant, then a linear decay over the last half to ~zero
    wsd_decay_frac=0.5,
    wsd_decay_shape="linear",
    final_div_factor=100.0,  # final lr = lr / div_factor / final_div_factor = lr / 1e4
)
