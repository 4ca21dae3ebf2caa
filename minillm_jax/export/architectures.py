"""One function per (format, architecture): our parameter tree <-> that format's state dict.

Formats:
  llm-baselines  epfml/llm-baselines GPTBase (`--model base`) and Llama (`--model llama2`),
                 docs/llm-baselines.md#state-dict-names-and-shapes: Linear weights (out, in), wte and lm_head both present.
  hf             Hugging Face transformers GPT2LMHeadModel / LlamaForCausalLM.

To add an architecture (e.g. MoE blocks): write its `*_rules(cfg)` function(s), its
`check_*` expressibility function if it has options a format cannot express, and register them in
`REGISTRY`. `mapping.check_rules_cover` then refuses any leaf of the model the table forgets.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from minillm_jax.export.errors import ConversionError
from minillm_jax.export.mapping import Identity, QKVSplit, Rule, Tied, Transpose, layered
from minillm_jax.model import ModelConfig

LLM_BASELINES = "llm-baselines"
HF = "hf"
FORMATS = (LLM_BASELINES, HF)

_UNTIE_HINT = ("This is an untied model (llm-baselines HEAD --untied_embeds): import it with "
               "tie_embeddings=False (convert_from_torch.py --untied).")


# --------------------------------------------------------------------------- llm-baselines


def _baselines_embeddings(cfg: ModelConfig) -> list[Rule]:
    if cfg.tie_embeddings:
        return [Rule("wte/embedding", ("transformer.wte.weight", "lm_head.weight"),
                     Tied(2, _UNTIE_HINT))]
    return [Rule("wte/embedding", ("transformer.wte.weight",)),
            Rule("lm_head/kernel", ("lm_head.weight",), Transpose())]


def gpt_llm_baselines_rules(cfg: ModelConfig) -> list[Rule]:
    T, I = Transpose(), Identity()
    entries = []  # module order: each weight followed by its bias
    for module, weight_transform in (("ln_1", I), ("attn/c_attn", T), ("attn/c_proj", T),
                                     ("ln_2", I), ("mlp/c_fc", T), ("mlp/c_proj", T)):
        torch_name = module.replace("/", ".")
        ours = "scale" if module.startswith("ln") else "kernel"
        entries.append((f"{module}/{ours}", f"{torch_name}.weight", weight_transform))
        if cfg.bias:
            entries.append((f"{module}/bias", f"{torch_name}.bias", I))
    rules = _baselines_embeddings(cfg)
    rules.insert(1, Rule("wpe/embedding", ("transformer.wpe.weight",)))
    rules += layered("transformer.h.{i}.", entries)
    rules.append(Rule("ln_f/scale", ("transformer.ln_f.weight",)))
    if cfg.bias:
        rules.append(Rule("ln_f/bias", ("transformer.ln_f.bias",)))
    return rules


def llama_llm_baselines_rules(cfg: ModelConfig) -> list[Rule]:
    T, I = Transpose(), Identity()
    entries = [("ln_1/scale", "ln_1.weight", I), ("attn/c_attn/kernel", "attn.c_attn.weight", T)]
    if cfg.bias:  # llm-baselines Llama: only attention has biases
        entries.append(("attn/c_attn/bias", "attn.c_attn.bias", I))
    entries.append(("attn/c_proj/kernel", "attn.c_proj.weight", T))
    if cfg.bias:
        entries.append(("attn/c_proj/bias", "attn.c_proj.bias", I))
    entries += [("ln_2/scale", "ln_2.weight", I), ("mlp/w1/kernel", "mlp.w1.weight", T),
                ("mlp/w2/kernel", "mlp.w2.weight", T), ("mlp/c_proj/kernel", "mlp.c_proj.weight", T)]
    return (_baselines_embeddings(cfg) + layered("transformer.h.{i}.", entries)
            + [Rule("ln_f/scale", ("transformer.ln_f.weight",))])


def check_llm_baselines(cfg: ModelConfig, exporting: bool = True) -> list[str]:
    """Refuses what the LauzHack-era llm-baselines code cannot hold; returns notes. Importing an
    untied state dict (HEAD --untied_embeds) is allowed: the rules map wte and lm_head apart."""
    problems, notes = [], []
    if not cfg.tie_embeddings and exporting:
        problems.append(
            "the model has untied embeddings (tie_embeddings=False) but llm-baselines (LauzHack "
            "code) always ties transformer.wte.weight and lm_head.weight: loading distinct tensors "
            "would silently keep only lm_head.weight. Export it with --format hf (GPT2LMHeadModel "
            "and LlamaForCausalLM support untied embeddings) instead")
    if cfg.model == "gpt" and cfg.layernorm_eps != 1e-5:
        problems.append(f"layernorm_eps={cfg.layernorm_eps}: llm-baselines hard-codes 1e-5")
    if cfg.model == "llama" and cfg.rope_theta != 10000.0:
        problems.append(f"rope_theta={cfg.rope_theta}: llm-baselines hard-codes 10000")
    if problems:
        raise ConversionError(f"cannot export this {cfg.model} model to llm-baselines exactly:\n  "
                              + "\n  ".join(problems))
    if cfg.attention_dropout != cfg.dropout:
        notes.append(f"attention_dropout={cfg.attention_dropout} differs from dropout="
                     f"{cfg.dropout}; llm-baselines uses --dropout for both (training only: "
                     "inference is unaffected)")
    return notes


# --------------------------------------------------------------------------- Hugging Face


def gpt2_hf_rules(cfg: ModelConfig) -> list[Rule]:
    """GPT2LMHeadModel. Conv1D weights are (in, out) like Flax kernels: no transpose. GPT-2 always
    has LayerNorm and Linear biases: zeros when our model has bias=False."""
    I = Identity()
    c, h = cfg.n_embd, cfg.mlp_hidden
    entries = [("ln_1/scale", "ln_1.weight", I), ("attn/c_attn/kernel", "attn.c_attn.weight", I),
               ("attn/c_proj/kernel", "attn.c_proj.weight", I), ("ln_2/scale", "ln_2.weight", I),
               ("mlp/c_fc/kernel", "mlp.c_fc.weight", I),
               ("mlp/c_proj/kernel", "mlp.c_proj.weight", I)]
    biases = [("ln_1/bias", "ln_1.bias", c), ("attn/c_attn/bias", "attn.c_attn.bias", 3 * c),
              ("attn/c_proj/bias", "attn.c_proj.bias", c), ("ln_2/bias", "ln_2.bias", c),
              ("mlp/c_fc/bias", "mlp.c_fc.bias", h), ("mlp/c_proj/bias", "mlp.c_proj.bias", c)]
    rules = [Rule("wte/embedding", ("transformer.wte.weight",)),
             Rule("wpe/embedding", ("transformer.wpe.weight",))]
    rules += layered("transformer.h.{i}.", entries)
    why = "our model has bias=False (GPT-2 always has biases; they are exported as zeros)"
    if cfg.bias:
        rules += layered("transformer.h.{i}.", [(o, t, I) for o, t, _ in biases])
    else:
        rules += [Rule(None, ("transformer.h.{i}." + t,), layered=True, shape=(n,), why=why)
                  for _, t, n in biases]
    rules.append(Rule("ln_f/scale", ("transformer.ln_f.weight",)))
    rules.append(Rule("ln_f/bias", ("transformer.ln_f.bias",)) if cfg.bias
                 else Rule(None, ("transformer.ln_f.bias",), shape=(c,), why=why))
    if not cfg.tie_embeddings:
        rules.append(Rule("lm_head/kernel", ("lm_head.weight",), Transpose()))
    return rules


def llama_hf_rules(cfg: ModelConfig) -> list[Rule]:
    """LlamaForCausalLM: c_attn split into q/k/v_proj with q, k rows permuted per head from our
    interleaved RoPE pairs to HF's rotate-half pairs; our attention biases (c_attn, c_proj) are
    exactly HF's attention_bias (q, k, v, o)."""
    T, I = Transpose(), Identity()
    qkv = ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight")
    entries = [("ln_1/scale", "input_layernorm.weight", I),
               ("attn/c_attn/kernel", qkv, QKVSplit(cfg.n_head, transpose=True, permute_qk=True)),
               ("attn/c_proj/kernel", "self_attn.o_proj.weight", T),
               ("ln_2/scale", "post_attention_layernorm.weight", I),
               ("mlp/w1/kernel", "mlp.gate_proj.weight", T),
               ("mlp/w2/kernel", "mlp.up_proj.weight", T),
               ("mlp/c_proj/kernel", "mlp.down_proj.weight", T)]
    if cfg.bias:
        entries += [("attn/c_attn/bias", tuple(k.replace("weight", "bias") for k in qkv),
                     QKVSplit(cfg.n_head, transpose=False, permute_qk=True)),
                    ("attn/c_proj/bias", "self_attn.o_proj.bias", I)]
    rules = [Rule("wte/embedding", ("model.embed_tokens.weight",))]
    rules += layered("model.layers.{i}.", entries)
    rules.append(Rule("ln_f/scale", ("model.norm.weight",)))
    if not cfg.tie_embeddings:
        rules.append(Rule("lm_head/kernel", ("lm_head.weight",), T))
    return rules


def check_hf(cfg: ModelConfig, exporting: bool = True) -> list[str]:
    """Everything our GPT/Llama can be is expressible in GPT2/Llama configs; returns notes."""
    notes = []
    if cfg.model == "gpt" and not cfg.bias:
        notes.append("GPT2LMHeadModel always has biases: written as zeros (bias=False is exact at "
                     "export; note that fine-tuning in transformers would train them)")
    if cfg.model == "llama" and cfg.dropout > 0:
        notes.append(f"LlamaConfig has no embedding/residual dropout: our dropout={cfg.dropout} "
                     "is dropped (training only; inference is identical); attention_dropout="
                     f"{cfg.attention_dropout} is kept")
    if cfg.model == "llama" and cfg.head_dim % 2:
        raise ConversionError(f"llama head size {cfg.head_dim} is odd: RoPE needs an even size")
    return notes


# --------------------------------------------------------------------------- registry


@dataclasses.dataclass(frozen=True)
class Entry:
    rules: Callable[[ModelConfig], list[Rule]]
    check: Callable[..., list[str]]  # (cfg, exporting) -> notes; raises ConversionError
    name: str  # the target class, for messages


REGISTRY: dict[str, dict[str, Entry]] = {
    LLM_BASELINES: {
        "gpt": Entry(gpt_llm_baselines_rules, check_llm_baselines, "llm-baselines GPTBase"),
        "llama": Entry(llama_llm_baselines_rules, check_llm_baselines, "llm-baselines Llama"),
    },
    HF: {
        "gpt": Entry(gpt2_hf_rules, check_hf, "transformers GPT2LMHeadModel"),
        "llama": Entry(llama_hf_rules, check_hf, "transformers LlamaForCausalLM"),
    },
}


def lookup(cfg: ModelConfig, fmt: str) -> Entry:
    if fmt not in REGISTRY:
        raise ConversionError(f"unknown export format {fmt!r}: use one of {sorted(REGISTRY)}")
    if cfg.model not in REGISTRY[fmt]:
        raise ConversionError(
            f"unknown architecture {cfg.model!r} for format {fmt!r}: the converter knows "
            f"{sorted(REGISTRY[fmt])}")
    _refuse_non_standard_blocks(cfg, fmt)
    return REGISTRY[fmt][cfg.model]


def _refuse_non_standard_blocks(cfg: ModelConfig, fmt: str) -> None:
    """Neither llm-baselines (LauzHack) nor transformers' GPT2/Llama classes have MoE layers,
    other sublayer orders, weighted residuals, QK-norm, soft-capped logits or another MLP
    activation than their own: refuse rather than export something else. (zero_init_proj only
    changes the initialisation: it exports.)"""
    problems = []
    if cfg.block_pattern != "attn,mlp":
        problems.append(f"block_pattern={cfg.block_pattern!r} (only the plain 'attn,mlp' block "
                        "exists there; MoE and Brainformer blocks cannot be expressed)")
    if cfg.weighted_residual:
        problems.append("weighted_residual=True (no such residual mixing there)")
    if cfg.qk_norm:
        problems.append("qk_norm=True (no norm on queries and keys there)")
    if cfg.logit_softcap > 0:
        problems.append(f"logit_softcap={cfg.logit_softcap} (no logit soft-capping there)")
    native = "swiglu" if cfg.model == "llama" else "gelu"
    if cfg.mlp_activation != native:
        problems.append(f"mlp_activation={cfg.mlp_activation!r} (its {cfg.model} MLP is "
                        f"{native})")
    if problems:
        raise ConversionError(f"cannot export this model to {fmt}: " + "; ".join(problems))
