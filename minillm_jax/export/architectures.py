"""One function per (format, architecture): our parameter tree <-> that format's state dict.

Formats:
  llm-baselines  epfml/llm-baselines GPTBase (`--model base`) and Llama (`--model llama2`),
                 docs/llm-baselines.md#state-dict-names-and-shapes: Linear weights (out, in), wte and lm_head both present.
  hf             Hugging Face transformers: the stock class that computes the model exactly
                 (`stock_hf_entry`: GPT2LMHeadModel, LlamaForCausalLM, Qwen3ForCausalLM,
                 ArceeForCausalLM), else the custom-code MiniLLMForCausalLM (hf-custom).
  hf-custom      MiniLLMForCausalLM (minillm_jax/export/hf_custom/, loaded with
                 trust_remote_code=True): our parameter names, torch Linear layout, every dense
                 option (qk_norm, mlp_activation, logit_softcap, weighted_residual, block order,
                 value_embeddings, smear).

To add an architecture (e.g. MoE blocks): write its `*_rules(cfg)` function(s), its
`check_*` expressibility function if it has options a format cannot express, and register them in
`REGISTRY`. `mapping.check_rules_cover` then refuses any leaf of the model the table forgets.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from minillm_jax.export.errors import ConversionError
from minillm_jax.export.mapping import (
    Identity, QKVSplit, Rule, RowPermutation, Tied, Transpose, flatten, layered,
    rope_interleaved_to_half)
from minillm_jax.model.transformer import ModelConfig, Transformer, abstract_params

LLM_BASELINES = "llm-baselines"
HF = "hf"
HF_CUSTOM = "hf-custom"
FORMATS = (LLM_BASELINES, HF, HF_CUSTOM)

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
    exactly HF's attention_bias (q, k, v, o). With qk_norm the same rules are Qwen3's."""
    T = Transpose()
    return _llama_hf_model(cfg, [("mlp/w1/kernel", "mlp.gate_proj.weight", T),
                                 ("mlp/w2/kernel", "mlp.up_proj.weight", T),
                                 ("mlp/c_proj/kernel", "mlp.down_proj.weight", T)])


def _llama_hf_attention(cfg: ModelConfig) -> list[tuple]:
    """Rule entries of the attention of LlamaForCausalLM-style layers (Llama, Qwen3, Arcee)."""
    T, I = Transpose(), Identity()
    qkv = ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight")
    entries = [("attn/c_attn/kernel", qkv, QKVSplit(cfg.n_head, transpose=True, permute_qk=True)),
               ("attn/c_proj/kernel", "self_attn.o_proj.weight", T)]
    if cfg.bias:
        entries += [("attn/c_attn/bias", tuple(k.replace("weight", "bias") for k in qkv),
                     QKVSplit(cfg.n_head, transpose=False, permute_qk=True)),
                    ("attn/c_proj/bias", "self_attn.o_proj.bias", I)]
    if cfg.qk_norm:  # per-head scales, permuted like the q/k rows they multiply
        perm = RowPermutation(rope_interleaved_to_half(cfg.head_dim))
        entries += [("attn/q_norm/scale", "self_attn.q_norm.weight", perm),
                    ("attn/k_norm/scale", "self_attn.k_norm.weight", perm)]
    return entries


def _llama_hf_model(cfg: ModelConfig, entries: list[tuple]) -> list[Rule]:
    T, I = Transpose(), Identity()
    entries = ([("ln_1/scale", "input_layernorm.weight", I),
                ("ln_2/scale", "post_attention_layernorm.weight", I)]
               + _llama_hf_attention(cfg) + entries)
    rules = [Rule("wte/embedding", ("model.embed_tokens.weight",))]
    rules += layered("model.layers.{i}.", entries)
    rules.append(Rule("ln_f/scale", ("model.norm.weight",)))
    if not cfg.tie_embeddings:
        rules.append(Rule("lm_head/kernel", ("lm_head.weight",), T))
    return rules


def qwen3_hf_rules(cfg: ModelConfig) -> list[Rule]:
    """Qwen3ForCausalLM = LlamaForCausalLM + per-head RMSNorm on q and k before RoPE (the q/k norm
    entries of _llama_hf_attention)."""
    return llama_hf_rules(cfg)


def arcee_hf_rules(cfg: ModelConfig) -> list[Rule]:
    """ArceeForCausalLM = LlamaForCausalLM with a non-gated MLP down_proj(act(up_proj x))."""
    T = Transpose()
    return _llama_hf_model(cfg, [("mlp/c_fc/kernel", "mlp.up_proj.weight", T),
                                 ("mlp/c_proj/kernel", "mlp.down_proj.weight", T)])


def param_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Leaf path -> shape of our model's parameters (nothing allocated)."""
    return {k: tuple(v.shape) for k, v in flatten(abstract_params(Transformer(cfg))).items()}



def custom_hf_rules(cfg: ModelConfig) -> list[Rule]:
    """MiniLLMForCausalLM (hf_custom/modeling_minillm.py): our own names with torch's layout:
    a/b/kernel -> a.b.weight (out, in), scale -> weight, embedding -> weight; the blocks under
    model.blocks.{i}, everything else under model. except lm_head."""
    rules = []
    for path in sorted(param_shapes(cfg)):
        *module, leaf = path.split("/")
        name = ".".join(module + [{"kernel": "weight", "scale": "weight", "embedding": "weight",
                                   "bias": "bias"}.get(leaf, leaf)])
        transform = Transpose() if leaf == "kernel" else Identity()
        if path.startswith("blocks/"):
            rules.append(Rule(path, ("model." + name.replace("blocks.", "blocks.{i}.", 1),),
                              transform, layered=True))
        else:
            rules.append(Rule(path, (name if name == "lm_head.weight" else "model." + name,),
                              transform))
    return rules


def check_hf(cfg: ModelConfig, exporting: bool = True) -> list[str]:
    """Everything our GPT/Llama can be is expressible in GPT2/Llama configs; returns notes."""
    notes = []
    if cfg.model == "gpt" and not cfg.bias:
        notes.append("GPT2LMHeadModel always has biases: written as zeros (bias=False is exact at "
                     "export; note that fine-tuning in transformers would train them)")
    if cfg.model == "llama" and cfg.dropout > 0:
        config_class = stock_hf_entry(cfg)[0].name.split()[-1].replace("ForCausalLM", "Config")
        notes.append(f"{config_class} has no embedding/residual "
                     f"dropout: our dropout={cfg.dropout} is dropped (training only; inference is "
                     f"identical); attention_dropout={cfg.attention_dropout} is kept")
    if cfg.model == "llama" and cfg.head_dim % 2:
        raise ConversionError(f"llama head size {cfg.head_dim} is odd: RoPE needs an even size")
    return notes


def check_hf_custom(cfg: ModelConfig, exporting: bool = True) -> list[str]:
    return []


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
        "qwen3": Entry(qwen3_hf_rules, check_hf, "transformers Qwen3ForCausalLM"),
        "arcee": Entry(arcee_hf_rules, check_hf, "transformers ArceeForCausalLM"),
    },
    HF_CUSTOM: {
        "custom": Entry(custom_hf_rules, check_hf_custom,
                        "MiniLLMForCausalLM (custom code, trust_remote_code=True)"),
    },
}
MODELS = ("gpt", "llama")


def stock_hf_entry(cfg: ModelConfig) -> tuple[Entry | None, str]:
    """(the stock transformers class computing exactly our model, why) or (None, why none does).

    Checked numerically in tests/export (random weights, float32 logits <= 1e-5 relative).
    GPT: GPT2LMHeadModel, whose activation_function also takes "relu2". Llama: LlamaForCausalLM
    (SwiGLU); Qwen3ForCausalLM is Llama plus per-head RMSNorm on q and k before RoPE (our
    qk_norm, same eps as the other norms); ArceeForCausalLM is Llama with a non-gated MLP
    (hidden_act gelu = exact erf GELU, or relu2). What no stock class has: soft-capped logits
    (Gemma 2/3 have them, but also scaled embeddings, (1 + w) norms and post-norms), QK-norm in a
    GPT-2 block or with a non-gated Llama MLP (OLMo 2 normalises q and k over all heads and puts
    its norms after the sublayers), a gated MLP with learned positions, DenseFormer weighted
    residuals and other sublayer orders.
    """
    hf = REGISTRY[HF]
    missing = []
    if cfg.block_pattern != "attn,mlp":
        missing.append(f"block_pattern={cfg.block_pattern!r}")
    if cfg.weighted_residual:
        missing.append("weighted_residual=True (DenseFormer residual weights)")
    if cfg.unet_skips:
        missing.append("unet_skips=True (U-net skip weights)")
    if cfg.attention_window > 0:
        missing.append(f"attention_window={cfg.attention_window} (sliding-window attention)")
    if cfg.logit_softcap > 0:
        missing.append(f"logit_softcap={cfg.logit_softcap} (only Gemma 2/3 soft-cap logits, and "
                       "they also scale embeddings and add post-norms)")
    if cfg.value_embeddings:
        missing.append(f"value_embeddings={cfg.value_embeddings} (modded-nanogpt value "
                       "embeddings)")
    if cfg.smear:
        missing.append("smear=True (modded-nanogpt previous-token embedding gate)")
    if cfg.model == "gpt":
        if cfg.qk_norm:
            missing.append("qk_norm=True in a GPT-2 block")
        if cfg.mlp_activation == "swiglu":
            missing.append("a SwiGLU MLP in a GPT-2 block")
        entry = hf["gpt"]
    elif cfg.mlp_activation == "swiglu":
        entry = hf["qwen3"] if cfg.qk_norm else hf["llama"]
    elif cfg.qk_norm:
        missing.append(f"qk_norm=True with a non-gated mlp_activation={cfg.mlp_activation!r} "
                       "(Qwen3 has this QK-norm but a gated MLP; Arcee the MLP but no QK-norm)")
        entry = None
    else:
        entry = hf["arcee"]
    if missing:
        return None, "no stock transformers class computes this model: " + "; ".join(missing)
    extra = {"transformers Qwen3ForCausalLM": " (Llama + per-head RMSNorm on q, k: our qk_norm)",
             "transformers ArceeForCausalLM": f" (Llama with a non-gated {cfg.mlp_activation} MLP)",
             "transformers GPT2LMHeadModel": f" (activation_function={cfg.mlp_activation!r})"}
    return entry, f"{entry.name} computes this model exactly{extra.get(entry.name, '')}"


def hf_entry(cfg: ModelConfig, custom_code: bool = False) -> tuple[Entry, str]:
    """The Hugging Face target of a model and why: the stock class when one fits (and custom
    code is not asked for), else the custom-code MiniLLMForCausalLM."""
    _refuse_for_custom_code(cfg)
    stock, why = stock_hf_entry(cfg)
    if custom_code:
        return REGISTRY[HF_CUSTOM]["custom"], "custom code was asked for (--custom-code)"
    if stock is None:
        return REGISTRY[HF_CUSTOM]["custom"], why
    return stock, why


def lookup(cfg: ModelConfig, fmt: str) -> Entry:
    if fmt not in REGISTRY:
        raise ConversionError(f"unknown export format {fmt!r}: use one of {sorted(REGISTRY)}")
    if cfg.model not in MODELS:
        raise ConversionError(
            f"unknown architecture {cfg.model!r} for format {fmt!r}: the converter knows "
            f"{sorted(MODELS)}")
    if fmt in (HF, HF_CUSTOM):
        return hf_entry(cfg, custom_code=fmt == HF_CUSTOM)[0]
    _refuse_non_standard_blocks(cfg, fmt)
    return REGISTRY[fmt][cfg.model]


def _refuse_for_custom_code(cfg: ModelConfig) -> None:
    """What even the custom-code export does not hold: MoE sublayers and blocks with other than
    one attention sublayer."""
    kinds = cfg.sublayer_kinds
    if "moe" in kinds:
        raise ConversionError(
            f"cannot export this model to hf: block_pattern={cfg.block_pattern!r} has MoE "
            "sublayers, which the export does not write (it would need a top-k router and "
            "experts in hf_custom/modeling_minillm.py, dropless only: capacity-limited routing "
            "depends on the other tokens of a group); export a dense model")
    if kinds.count("attn") != 1:
        raise ConversionError(
            f"cannot export this model to hf: block_pattern={cfg.block_pattern!r} needs exactly "
            "one 'attn' sublayer per block (one KV cache per block in the exported model)")


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
    if cfg.unet_skips:
        problems.append("unet_skips=True (no U-net skip connections there)")
    if cfg.attention_window > 0:
        problems.append(f"attention_window={cfg.attention_window} (only full causal attention "
                        "there)")
    if cfg.qk_norm:
        problems.append("qk_norm=True (no norm on queries and keys there)")
    if cfg.logit_softcap > 0:
        problems.append(f"logit_softcap={cfg.logit_softcap} (no logit soft-capping there)")
    if cfg.value_embeddings:
        problems.append(f"value_embeddings={cfg.value_embeddings} (no value embeddings there)")
    if cfg.smear:
        problems.append("smear=True (no previous-token embedding gate there)")
    native = "swiglu" if cfg.model == "llama" else "gelu"
    if cfg.mlp_activation != native:
        problems.append(f"mlp_activation={cfg.mlp_activation!r} (its {cfg.model} MLP is "
                        f"{native})")
    if problems:
        raise ConversionError(f"cannot export this model to {fmt}: " + "; ".join(problems))
