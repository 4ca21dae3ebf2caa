"""Run configuration: the ml_collections file the user writes, turned into typed, checked parts.

The user interface is a config file under configs/ plus `--config.FIELD=VALUE` overrides (a flat
ml_collections ConfigDict). Right after parsing, `build_config` turns it into a frozen
`TrainConfig` of five parts, each handed only to the code that needs it:

    model       ModelConfig      the architecture (what the parameters are and compute)
    execution   ExecutionConfig  how it runs: dtypes, attention kernel, remat, scan, mesh
    optim       OptimConfig      optimizer, learning-rate schedule and their hyper-parameters
    data        DataConfig       dataset, batch shape, data order, evaluation batches
    run         RunConfig        length, logging, evaluation, checkpoints, budget, sampling, wandb

Defaults live in one place, configs/base.py: every dataclass field takes its default from the
field of the same name there, and a config that omits a field gets that default. Every field is
checked once, when its dataclass is built (`__post_init__`), with one line naming the field and
a valid range; checks that need the devices (mesh sizes, batch divisibility) are in
`check_devices`, called once the device count is known. Nothing is checked inside traced code.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Mapping

from minillm_jax.config.checks import (ConfigError, fail, in_range, non_negative, one_of,
                                       positive, resolve)
from minillm_jax.config.files import base_defaults
from minillm_jax.config.platforms import (COMPUTE_DTYPES, DENSE_WEIGHT_GRADS,
                                          resolve_compute_dtype, resolve_dense_weight_grad)

MODEL_ALIASES = {"gpt": "gpt", "base": "gpt", "llama": "llama", "llama2": "llama"}
MLP_ACTIVATIONS = ("auto", "gelu", "swiglu", "relu2")
MOE_IMPLS = ("auto", "einsum", "dropless")
MOE_PRIORITIES = ("token", "choice")
# xla_blocks: the XLA formulation by blocks of query rows (what "xla" runs for float32 on CPUs)
ATTENTION_IMPLS = ("auto", "xla", "xla_blocks", "cudnn")
# "" was "let JAX choose", which is JAX's XLA path: checkpoints of runs that said "" restore.
ATTENTION_ALIASES = {"": "xla"}
REMAT_POLICIES = ("none", "full", "save_dots", "save_named")
# The block types config.block_pattern may name; model.py maps each to its module (a test checks
# that the two agree), so checking a config needs no model code.
SUBLAYER_KINDS = ("attn", "mlp", "moe")
OPTIMIZERS = ("adamw", "sgd", "sfadamw", "lion", "muon", "adamw8bit")
SCHEDULERS = ("cos", "linear", "constant", "sgdr", "wsd", "plateau")
SCHEDULER_ALIASES = {"none": "constant"}
WSD_SHAPES = ("linear", "cosine", "1-sqrt")
# Muon's Newton-Schulz coefficient sets (optim/muon.py; a test) -> muon_ns_steps needed or None
MUON_NS_COEFFICIENTS = {"jordan": None, "polar_express": 5}
CAUTIOUS_WD_OPTIMIZERS = ("adamw", "muon")
WINDOW_LAYERS = {"all": lambda i, n: True, "alternate": lambda i, n: i % 2 == 0,  # windowed layer?
                 "all_but_last": lambda i, n: i < n - 1}


# ------------------------------------------------------------------------------------------------
# The typed parts. `_from_base` gives every field its configs/base.py default.


def _from_base(cls: type) -> type:
    """A frozen dataclass whose field defaults are configs/base.py's values of the same names."""
    base = base_defaults()
    for name in cls.__annotations__:
        current = cls.__dict__.get(name, dataclasses.MISSING)
        if isinstance(current, dataclasses.Field):
            current.default = base[name]
        else:
            setattr(cls, name, base[name])
    return dataclasses.dataclass(frozen=True)(cls)


def _free() -> Any:
    """Marks a ModelConfig field that may differ between a checkpoint and the run restoring it
    (it does not change the parameters or the function they compute)."""
    return dataclasses.field(metadata={"restore": "free"})


@_from_base
class ModelConfig:
    """The architecture: llm-baselines' GPTBase (`gpt`) or Llama (`llama`), plus the block
    options of minillm_jax/model/transformer.py. A checkpoint restores only into a model whose non-free
    fields are equal (`identity`)."""

    model: str
    n_layer: int
    n_embd: int
    n_head: int
    vocab_size: int
    sequence_length: int
    bias: bool
    rmsnorm_eps: float
    layernorm_eps: float
    multiple_of: int
    rope_theta: float
    tie_embeddings: bool
    block_pattern: str
    weighted_residual: bool
    unet_skips: bool
    attention_window: int
    attention_window_layers: str
    moe_n_experts: int
    moe_top_k: int
    moe_hidden: int
    qk_norm: bool
    mlp_activation: str
    logit_softcap: float
    value_embeddings: int
    smear: bool
    dropout: float = _free()
    attention_dropout: float = _free()
    init_std: float = _free()
    zero_init_proj: bool = _free()
    moe_capacity_factor: float = _free()
    moe_impl: str = _free()
    moe_priority: str = _free()
    moe_group_size: int = _free()
    moe_aux_loss_weight: float = _free()
    moe_z_loss_weight: float = _free()

    def __post_init__(self) -> None:
        if self.model not in MODEL_ALIASES:
            fail("model", self.model, f"is unknown: use one of {sorted(MODEL_ALIASES)}")
        resolve(self, "model", MODEL_ALIASES[self.model])
        positive(self, "n_layer", "n_embd", "n_head", "vocab_size", "sequence_length",
                  "multiple_of", "rope_theta", "rmsnorm_eps", "layernorm_eps", "init_std")
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"config.n_embd={self.n_embd} is not divisible by config.n_head={self.n_head}: "
                "choose n_head dividing n_embd (e.g. n_embd=64*n_head)")
        if self.model == "llama" and self.head_dim % 2:
            raise ConfigError(f"head size n_embd/n_head={self.head_dim} must be even for RoPE")
        one_of(self, "mlp_activation", MLP_ACTIVATIONS)
        if self.mlp_activation == "auto":
            resolve(self, "mlp_activation", "swiglu" if self.model == "llama" else "gelu")
        if not (self.logit_softcap >= 0 and math.isfinite(self.logit_softcap)):
            fail("logit_softcap", self.logit_softcap, "must be >= 0 (0 = off; e.g. 30)")
        if not 0 <= 2 * self.value_embeddings <= self.n_layer:
            fail("value_embeddings", self.value_embeddings,
                 f"must be between 0 (off) and n_layer/2={self.n_layer // 2}: table j feeds "
                 "layers j and n_layer-K+j, and no layer takes two")
        if (self.value_embeddings or self.smear) and self.n_embd < 12:
            raise ConfigError(f"config.n_embd={self.n_embd} is too small for value_embeddings/"
                              "smear: their gates read the first 12 channels (n_embd >= 12)")
        in_range(self, "dropout", 0.0, 1.0)
        if self.attention_dropout == -1.0:  # "same as dropout", as in llm-baselines
            resolve(self, "attention_dropout", self.dropout)
        in_range(self, "attention_dropout", 0.0, 1.0)
        known, kinds = SUBLAYER_KINDS, self.sublayer_kinds
        if not kinds or any(k not in known for k in kinds):
            raise ConfigError(
                f"config.block_pattern={self.block_pattern!r} must be a comma-separated list of "
                f"{'/'.join(known)} (e.g. 'attn,mlp' or 'attn,moe,mlp,moe,mlp,moe')")
        if self.has_moe:
            self._check_moe()
        if self.unet_skips and (self.weighted_residual or self.n_layer < 2):
            fail("unet_skips", True, "needs n_layer >= 2 and weighted_residual=False")
        non_negative(self, "attention_window")
        one_of(self, "attention_window_layers", tuple(WINDOW_LAYERS))

    def _check_moe(self) -> None:
        if self.moe_n_experts < 1:
            fail("moe_n_experts", self.moe_n_experts, "must be at least 1")
        if not 1 <= self.moe_top_k <= self.moe_n_experts:
            fail("moe_top_k", self.moe_top_k,
                  f"must be between 1 and moe_n_experts={self.moe_n_experts} (usually 1 or 2)")
        one_of(self, "moe_impl", MOE_IMPLS)
        if self.moe_impl == "einsum" and self.moe_capacity_factor <= 0:
            raise ConfigError(
                f"config.moe_impl='einsum' needs moe_capacity_factor > 0 (got "
                f"{self.moe_capacity_factor}); use moe_impl='dropless' for no capacity limit")
        one_of(self, "moe_priority", MOE_PRIORITIES)
        if self.moe_group_size < 0 or self.moe_hidden < 0:
            raise ConfigError("config.moe_group_size and config.moe_hidden must be >= 0 "
                              "(0 = default)")
        non_negative(self, "moe_aux_loss_weight", "moe_z_loss_weight")

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any]) -> "ModelConfig":
        """The ModelConfig of a flat config dict (e.g. one saved with a checkpoint)."""
        return part_from_flat(cls, flat)

    def identity(self) -> dict[str, Any]:
        """The fields a checkpoint and the run restoring it must agree on."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.metadata.get("restore") != "free"
                and (self.has_moe or not f.name.startswith("moe_"))}

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def mlp_hidden(self) -> int:
        """SwiGLU hidden size H = multiple_of * ceil(int(2*4C/3) / multiple_of), else 4C."""
        if self.mlp_activation != "swiglu":
            return 4 * self.n_embd
        hidden = int(2 * 4 * self.n_embd / 3)
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)

    @property
    def sublayer_kinds(self) -> tuple[str, ...]:
        return tuple(k.strip() for k in self.block_pattern.split(",") if k.strip())

    @property
    def sublayers(self) -> tuple[tuple[str, str], ...]:
        """(kind, module name) of each sublayer of a block, in order: a kind that occurs once is
        named after itself, repeated kinds are numbered from 0 (moe_0, mlp_0, moe_1, ...)."""
        kinds = self.sublayer_kinds
        seen: dict[str, int] = {}
        out = []
        for kind in kinds:
            index = seen.get(kind, 0)
            seen[kind] = index + 1
            out.append((kind, kind if kinds.count(kind) == 1 else f"{kind}_{index}"))
        return tuple(out)

    @property
    def windowed_layers(self) -> tuple[bool, ...]:  # per layer: sliding-window attention?
        on = WINDOW_LAYERS[self.attention_window_layers]
        return tuple(self.attention_window > 0 and on(i, self.n_layer) for i in range(self.n_layer))

    @property
    def has_moe(self) -> bool:
        return "moe" in self.sublayer_kinds

    @property
    def proj_std(self) -> float:
        """Init std of residual-branch output projections: init_std / sqrt(#branches)."""
        return self.init_std / math.sqrt(len(self.sublayer_kinds) * self.n_layer)

    @property
    def expert_hidden(self) -> int:
        return self.moe_hidden or self.mlp_hidden

    @property
    def moe_impl_resolved(self) -> str:
        if self.moe_impl == "auto":
            return "einsum" if self.moe_capacity_factor > 0 else "dropless"
        return self.moe_impl


@_from_base
class ExecutionConfig:
    """How the model runs: numerics, kernels, memory/speed trade-offs and the device mesh. None of
    these change what a step computes beyond rounding."""

    compute_dtype: str
    residual_dtype: str
    attention_impl: str
    loss_chunk_size: int
    compilation_cache: str
    scan_layers: bool
    remat: str
    dense_weight_grad: str
    mesh_data: int
    mesh_fsdp: int

    def __post_init__(self) -> None:
        one_of(self, "compute_dtype", ("auto",) + COMPUTE_DTYPES)
        one_of(self, "residual_dtype", COMPUTE_DTYPES)
        resolve(self, "attention_impl",
                 ATTENTION_ALIASES.get(self.attention_impl, self.attention_impl))
        one_of(self, "attention_impl", ATTENTION_IMPLS)
        one_of(self, "remat", REMAT_POLICIES)
        one_of(self, "dense_weight_grad", DENSE_WEIGHT_GRADS)
        if self.loss_chunk_size < 0:
            fail("loss_chunk_size", self.loss_chunk_size,
                  "must be >= 0 (tokens per chunk of the fused output-layer loss; 0 = plain "
                  "logits)")
        if self.mesh_data != -1 and self.mesh_data < 1:
            fail("mesh_data", self.mesh_data, "must be -1 (all devices not used by fsdp) or >= 1")
        positive(self, "mesh_fsdp")

    def for_platform(self, platform: str) -> "ExecutionConfig":
        """This config with compute_dtype and dense_weight_grad "auto" resolved for a device
        platform (resolve_compute_dtype, resolve_dense_weight_grad)."""
        return dataclasses.replace(
            self, compute_dtype=resolve_compute_dtype(self.compute_dtype, platform)[0],
            dense_weight_grad=resolve_dense_weight_grad(self.dense_weight_grad, platform))


@_from_base
class OptimConfig:
    """The optimizer and its learning-rate schedule (minillm_jax/optim/README.md). The schedule's
    length (its horizon) is not here: it is the run's `iterations`, or what the time budget sets."""

    opt: str
    lr: float
    weight_decay: float
    beta1: float
    beta2: float
    eps: float
    grad_clip: float
    scheduler: str
    warmup_percent: float
    div_factor: float
    final_div_factor: float
    sgdr_first_cycle: float
    sgdr_cycle_mult: float
    sgdr_peak_decay: float
    wsd_decay_frac: float
    wsd_decay_shape: str
    plateau: bool
    plateau_factor: float
    plateau_patience: int
    plateau_min_scale: float
    plateau_rtol: float
    plateau_cooldown: int
    lion_beta2: float
    muon_lr: float
    muon_momentum: float
    muon_ns_steps: int
    muon_weight_decay: float
    muon_ns_coefficients: str
    muon_normuon: bool
    cautious_weight_decay: bool
    adam8bit_block_size: int
    adam8bit_min_size: int
    adam8bit_stochastic_round: bool

    def __post_init__(self) -> None:
        one_of(self, "opt", OPTIMIZERS)
        resolve(self, "scheduler", SCHEDULER_ALIASES.get(self.scheduler, self.scheduler))
        one_of(self, "scheduler", SCHEDULERS)
        positive(self, "lr", "eps", "div_factor", "final_div_factor", "sgdr_first_cycle",
                  "muon_lr", "muon_ns_steps", "adam8bit_block_size", "plateau_patience")
        non_negative(self, "weight_decay", "grad_clip", "muon_weight_decay", "plateau_rtol",
                      "plateau_cooldown", "adam8bit_min_size", "sgdr_peak_decay")
        for name in ("beta1", "beta2", "lion_beta2", "muon_momentum"):
            in_range(self, name, 0.0, 1.0)
        in_range(self, "warmup_percent", 0.0, 1.0)
        if self.sgdr_cycle_mult < 1.0:
            fail("sgdr_cycle_mult", self.sgdr_cycle_mult, "must be >= 1")
        in_range(self, "wsd_decay_frac", 0.0, 1.0, high_open=False)
        one_of(self, "wsd_decay_shape", WSD_SHAPES)
        if self.scheduler == "wsd" and self.warmup_percent + self.wsd_decay_frac > 1.0:
            raise ConfigError(
                f"config.warmup_percent={self.warmup_percent} plus config.wsd_decay_frac="
                f"{self.wsd_decay_frac} exceed the whole run: lower one of them")
        in_range(self, "plateau_factor", 0.0, 1.0, low_open=True)
        in_range(self, "plateau_min_scale", 0.0, 1.0, low_open=True, high_open=False)
        one_of(self, "muon_ns_coefficients", tuple(MUON_NS_COEFFICIENTS))
        steps = MUON_NS_COEFFICIENTS[self.muon_ns_coefficients]
        if steps is not None and self.muon_ns_steps != steps:
            fail("muon_ns_steps", self.muon_ns_steps,
                 f"must be {steps} with muon_ns_coefficients={self.muon_ns_coefficients!r} "
                 f"(one coefficient row per step)")
        if self.cautious_weight_decay and self.opt not in CAUTIOUS_WD_OPTIMIZERS:
            fail("cautious_weight_decay", True,
                 f"is implemented for opt in {list(CAUTIOUS_WD_OPTIMIZERS)} only, not "
                 f"opt={self.opt!r}")

    @property
    def uses_plateau(self) -> bool:
        """plateau=True, or scheduler='plateau' (a constant base lr with the plateau scale)."""
        return self.plateau or self.scheduler == "plateau"


@_from_base
class DataConfig:
    """Where batches come from and their shape (the sequence length is the model's)."""

    dataset: str
    data_dir: str
    data_seed: int
    allow_data_change: bool
    batch_size: int
    acc_steps: int
    eval_batch_size: int

    def __post_init__(self) -> None:
        positive(self, "batch_size", "acc_steps")
        non_negative(self, "eval_batch_size")
        if not self.data_dir:
            resolve(self, "data_dir", os.path.join("data", self.dataset))
        if not self.eval_batch_size:
            resolve(self, "eval_batch_size", self.batch_size)


@_from_base
class RunConfig:
    """The run around the steps: its length, evaluations, checkpoints, logs and samples."""

    workdir: str
    seed: int
    iterations: int
    log_freq: int
    eval_freq: int
    eval_batches: int
    final_full_eval: bool
    save_every: int
    save_every_minutes: float
    keep: int
    keep_best: bool
    nonfinite_rollback_after: int
    resume: bool
    overwrite: bool
    budget_minutes: float
    budget_warmup_steps: int
    budget_tolerance: float
    wandb: bool
    wandb_project: str
    wandb_run_name: str
    sample_prompt: str
    sample_tokens: int
    sample_temperature: float
    sample_top_k: int

    def __post_init__(self) -> None:
        positive(self, "iterations", "log_freq", "eval_freq", "eval_batches",
                  "budget_warmup_steps", "nonfinite_rollback_after")
        non_negative(self, "save_every", "save_every_minutes", "budget_minutes",
                      "budget_tolerance", "sample_tokens", "sample_temperature", "sample_top_k")


PARTS = {"model": ModelConfig, "execution": ExecutionConfig, "optim": OptimConfig,
         "data": DataConfig, "run": RunConfig}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A whole run, typed and checked: see the module docstring."""

    model: ModelConfig
    execution: ExecutionConfig
    optim: OptimConfig
    data: DataConfig
    run: RunConfig
    name: str = "run"

    @property
    def tokens_per_step(self) -> int:
        """Tokens per optimizer step: batch_size x acc_steps x sequence_length."""
        return self.data.batch_size * self.data.acc_steps * self.model.sequence_length

    def to_dict(self) -> dict[str, Any]:
        """The flat, resolved field dict (what checkpoints, config.json and wandb record)."""
        flat: dict[str, Any] = {}
        for part in PARTS:
            flat.update(dataclasses.asdict(getattr(self, part)))
        return flat

    def replace(self, **parts: Any) -> "TrainConfig":
        return dataclasses.replace(self, **parts)


def part_from_flat(cls: type, flat: Mapping[str, Any]) -> Any:
    """A part (e.g. ModelConfig) built from the fields of a flat dict that belong to it."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in flat.items() if k in names})
