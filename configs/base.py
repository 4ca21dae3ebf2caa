"""llm-baselines defaults (LauzHack-era code, REFERENCE §1); every other config derives from this.

Run: python -m minillm_jax.main --config configs/base.py --config.lr=3e-4
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()

    # Model (REFERENCE §2-3). `model`: gpt (GPTBase, alias "base") or llama (alias "llama2").
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

    # Optimisation (REFERENCE §5-6).
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

    # Data.
    c.dataset = "slimpajama"  # slimpajama | shakespeare | any prepared directory via data_dir
    c.data_dir = ""  # default: data/<dataset>
    c.data_seed = 1337
    c.seed = 0

    # Evaluation: periodic evals on eval_batches fixed batches, the full validation set at the end.
    c.eval_freq = 200
    c.eval_batches = 24
    c.eval_batch_size = 0  # 0 = batch_size
    c.final_full_eval = True

    # Numerics and performance.
    c.compute_dtype = "float32"  # float32 | bfloat16 (params stay float32)
    c.attention_impl = ""  # "" (let JAX choose) | xla | cudnn
    # Tokens per chunk of the fused output-layer + loss (minillm_jax/losses.py); 0 = plain logits.
    c.loss_chunk_size = 1024
    c.scan_layers = True
    c.remat = "none"  # none | full | save_dots
    c.mesh_data = -1  # -1 = all devices not used by fsdp
    c.mesh_fsdp = 1

    # Run directory, logging and checkpoints.
    c.workdir = ""  # default: runs/<config name>
    c.log_freq = 10
    c.save_every = 0  # 0 = only the final checkpoint
    c.keep = 3
    c.wandb = False
    c.wandb_project = "minillm-jax"
    c.wandb_run_name = ""
    c.sample_prompt = "Once upon a time"
    c.sample_tokens = 40
    c.sample_temperature = 0.9
    c.sample_top_k = 0
    return c
