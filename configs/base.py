"""llm-baselines defaults (LauzHack-era code); every other config derives from this, and every
field's default lives here (docs/llm-baselines.md#command-line-defaults).

Run: python -m minillm_jax.main --config configs/base.py --config.lr=3e-4
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()

    # Model (docs/llm-baselines.md#gptbase-architecture-and-initialisation).
    # `model`: gpt (GPTBase, alias "base") or llama (alias "llama2").
    c.model = "gpt"
    c.n_layer = 12
    c.n_embd = 768
    c.n_head = 12
    c.vocab_size = 50304  # GPT-2's 50257 padded to a multiple of 64
    c.sequence_length = 512  # also the size of wpe and the RoPE table
    c.bias = False
    c.dropout = 0.0
    # Dropout on attention probabilities; -1 means "same as dropout" (llm-baselines).
    # Set 0 on GPUs to keep the fused (cuDNN flash) attention kernel in training.
    c.attention_dropout = -1.0
    c.rmsnorm_eps = 1e-5
    c.layernorm_eps = 1e-5
    c.multiple_of = 256  # SwiGLU hidden size rounding
    c.rope_theta = 10000.0
    c.tie_embeddings = True
    c.init_std = 0.02
    # Architecture experiments (minillm_jax/model/transformer.py docstring, minillm_jax/model/moe.py,
    # configs/moe.py, configs/brainformer.py). block_pattern: each block's sublayers in order,
    # each pre-normed with a residual: attn | mlp | moe ("attn,mlp" = the plain block).
    c.block_pattern = "attn,mlp"
    # Options from the 2024-26 speedrun line (README "A modern recipe"); all off = llm-baselines.
    c.qk_norm = False  # RMSNorm (learned scale) on each head's queries and keys, before RoPE
    c.mlp_activation = "auto"  # auto (gpt: gelu, llama: swiglu) | gelu | swiglu | relu2
    c.zero_init_proj = False  # residual-branch output projections start at zero
    c.logit_softcap = 0.0  # > 0: logits = cap * tanh(logits / cap); 0 = off
    c.weighted_residual = False  # DenseFormer: block inputs = learned sums of all earlier outputs
    # modded-nanogpt (minillm_jax/model/token_embedding_options.py): K extra token embeddings
    # added (gated) to the attention values of the first K and the last K layers; 0 = off
    c.value_embeddings = 0
    c.smear = False  # add a gated share of the previous token's embedding to each embedding
    # U-net skips (modded-nanogpt): block i's output, times a learned scalar (zero at init), is
    # added to the input of block n_layer-1-i, for i < n_layer//2. Not with weighted_residual.
    c.unet_skips = False
    # Sliding-window causal attention: query t sees keys (t - window, t]; 0 = full causal.
    c.attention_window = 0
    # Which layers are windowed: all | alternate (even layers windowed, odd full) | all_but_last
    c.attention_window_layers = "all"
    c.moe_n_experts = 8
    c.moe_top_k = 2  # 1 (Switch) or 2 (GShard/Mixtral)
    c.moe_capacity_factor = 1.25  # slots per expert = factor * k * group / E; <= 0: dropless
    c.moe_impl = "auto"  # auto (einsum if capacity_factor > 0 else dropless) | einsum | dropless
    c.moe_priority = "token"  # who keeps a slot: token (sequence order, causal) | choice (top-1 first)
    c.moe_group_size = 0  # tokens per routing group; 0 = one sequence
    c.moe_hidden = 0  # expert hidden size; 0 = the dense MLP's
    c.moe_aux_loss_weight = 0.01  # load-balancing loss (1.0 = uniform), summed over MoE layers
    c.moe_z_loss_weight = 0.001  # router z-loss, summed over MoE layers

    # Optimisation (docs/llm-baselines.md#optimizer-groups-and-the-training-step).
    c.opt = "adamw"
    c.lr = 1e-3
    c.weight_decay = 0.1
    c.beta1 = 0.9
    c.beta2 = 0.95
    c.eps = 1e-8
    c.grad_clip = 0.0  # 0 = no clipping
    c.scheduler = "cos"  # cos | linear | constant (alias none)
    c.warmup_percent = 0.05
    c.div_factor = 100.0  # OneCycle: initial lr = lr / div_factor
    c.final_div_factor = 0.1  # OneCycle: final lr = initial lr / final_div_factor

    # Batch and length of the run.
    c.batch_size = 32  # global micro-batch (sequences), split over data-parallel devices
    c.acc_steps = 4  # gradient accumulation micro-steps per optimizer step
    c.iterations = 25000
    # Wall-clock budget in minutes (0 = off), counted from the start of training (compile,
    # restore and data set-up included) and carried over a resume: the run ends when it is spent,
    # and the lr schedule's horizon is re-estimated from the measured time per step so that the
    # decay ends at the budget; `iterations` is then only an upper bound (minillm_jax/train/budget.py).
    c.budget_minutes = 0.0
    c.budget_warmup_steps = 5
    c.budget_tolerance = 0.02

    # Data.
    c.dataset = "slimpajama"  # slimpajama | shakespeare | any prepared directory via data_dir
    c.data_dir = ""  # default: data/<dataset>
    c.data_seed = 1337
    # Train (or resume) on data whose content differs from what prepare recorded in meta.json or
    # from what the resumed checkpoint was trained on (minillm_jax/data/integrity.py); False
    # refuses such data with one line. Damage that cannot be trained on is always refused.
    c.allow_data_change = False
    c.seed = 0

    # Evaluation: periodic evals on eval_batches fixed batches, the full validation set at the end.
    c.eval_freq = 200
    c.eval_batches = 24
    c.eval_batch_size = 0  # 0 = batch_size
    c.final_full_eval = True

    # Numerics and performance (README "Mixed precision and kernels").
    # Matmul inputs (float32 accumulation): auto (bfloat16 on a GPU or TPU, float32 on CPU) |
    # float32 | bfloat16. Parameters, optimizer state, norms, softmax and the loss stay float32
    # whatever this says.
    c.compute_dtype = "auto"
    # The residual stream between sublayers: float32 (as PyTorch autocast) | bfloat16 (less memory).
    c.residual_dtype = "float32"
    # auto (cuDNN flash attention on a GPU with a 16-bit compute dtype, if a test run of it works;
    # XLA elsewhere) | xla | cudnn
    c.attention_impl = "auto"
    # Tokens per chunk of the fused output-layer + loss in training and evaluation
    # (minillm_jax/model/losses.py): the (tokens x vocab) logits are never held whole. 0 = plain logits.
    c.loss_chunk_size = 4096
    # Persistent XLA compilation cache: "" = ~/.cache/minillm_jax/xla (or $XDG_CACHE_HOME),
    # "off" = none, else a directory. Repeated runs of a config skip most of the compile.
    c.compilation_cache = ""
    c.scan_layers = True
    c.remat = "none"  # none | full | save_dots | save_named
    # The Dense layers' weight gradient: auto ("transposed" on CPU, "xla" on a GPU or TPU) |
    # xla (autodiff's dots) | transposed (x^T materialised first; minillm_jax/model/dense.py).
    c.dense_weight_grad = "auto"
    c.mesh_data = -1  # -1 = all devices not used by fsdp
    c.mesh_fsdp = 1

    # Run directory, logging and checkpoints.
    c.workdir = ""  # default: runs/<config name>
    c.log_freq = 10
    # Checkpoints: at the end, on SIGTERM/SIGINT, every save_every steps (0 = off) and at least
    # every save_every_minutes of wall-clock (0 = off), so a kill -9 loses at most that much.
    c.save_every = 0
    c.save_every_minutes = 10.0
    c.keep = 3  # newest checkpoints kept; <= 0 keeps all
    c.keep_best = False  # also keep the checkpoint with the lowest periodic val loss
    # A step whose loss or gradient norm is not finite applies no update (the step counter still
    # advances); after this many in a row the run rolls back to its last checkpoint and skips
    # past the batches that caused them. A second rollback to the same checkpoint stops the run.
    c.nonfinite_rollback_after = 3
    c.resume = True  # continue from the newest readable checkpoint in workdir
    c.overwrite = False  # with resume=False: delete an existing run in workdir instead of refusing
    c.wandb = False
    c.wandb_project = "minillm-jax"
    c.wandb_run_name = ""
    c.sample_prompt = "Once upon a time"
    c.sample_tokens = 40
    c.sample_temperature = 0.9
    c.sample_top_k = 0

    # --- Optimizers and schedules beyond llm-baselines (minillm_jax/optim/README.md) ---------
    # opt: adamw | sgd | sfadamw | lion | muon | adamw8bit.  scheduler: cos | linear | constant |
    # sgdr | wsd | plateau.  Decaying schedules share OneCycle's end points: warm-up from
    # lr/div_factor over warmup_percent*iterations, minimum lr/div_factor/final_div_factor.
    c.sgdr_first_cycle = 0.25  # first cycle: fraction of iterations if < 1, else steps
    c.sgdr_cycle_mult = 1.0  # each cycle this many times longer than the previous
    c.sgdr_peak_decay = 1.0  # each restart's peak = previous peak * this
    c.wsd_decay_frac = 0.2  # final fraction of iterations spent decaying
    c.wsd_decay_shape = "1-sqrt"  # linear | cosine | 1-sqrt
    c.plateau = False  # scale the lr by plateau_factor after plateau_patience flat evals
    c.plateau_factor = 0.5
    c.plateau_patience = 3  # evaluations (every eval_freq steps) without improvement
    c.plateau_min_scale = 0.01  # the scale never goes below this
    c.plateau_rtol = 1e-4  # improvement = val loss < (1 - rtol) * best
    c.plateau_cooldown = 0  # evaluations ignored after a reduction
    c.lion_beta2 = 0.99  # opt=lion: b1 is beta1
    c.muon_lr = 0.02  # opt=muon: peak lr of the hidden matrices (lr drives the AdamW group)
    c.muon_momentum = 0.95
    c.muon_ns_steps = 5
    c.muon_weight_decay = 0.0  # decoupled, multiplied by the Muon lr
    c.muon_ns_coefficients = "jordan"  # jordan (fixed quintic) | polar_express (needs ns_steps=5)
    c.muon_normuon = False  # NorMuon: per-output-neuron second-moment normalisation after NS
    c.cautious_weight_decay = False  # opt=muon|adamw: decay only where update*param > 0
    c.adam8bit_block_size = 256  # opt=adamw8bit: elements per quantisation block (last axis)
    c.adam8bit_min_size = 4096  # smaller tensors keep float32 moments
    c.adam8bit_stochastic_round = True
    return c
