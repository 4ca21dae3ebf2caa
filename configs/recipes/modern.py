"""The options of the modern recipe, shared by configs/demo.py (CPU quick start),
configs/proxy_modern.py (the 10-minute CPU proxy) and configs/modern.py (166M, GPU).

Not a runnable config: those files apply OPTIONS on top of their own model and data. Each option
was kept because the multi-seed ablations in README "A modern recipe" measured it helping on the
CPU proxies (hyper-parameters picked on the shakespeare-dev split, never on the validation plays);
options measured not to help at this scale (zero_init_proj, logit_softcap) are left off.
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
