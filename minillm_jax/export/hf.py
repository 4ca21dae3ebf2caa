"""Hugging Face transformers export: a model directory that `AutoModelForCausalLM.from_pretrained`
loads (config.json + model.safetensors [+ GPT-2 tokenizer files]).

Where a stock transformers class computes the model exactly (architectures.stock_hf_entry), it is
that class and loads with no custom code; otherwise the directory also holds
configuration_minillm.py and modeling_minillm.py (hf_custom/, named by config.json's auto_map)
and loads with trust_remote_code=True. `save` returns which it wrote and why.

GPT -> GPT2LMHeadModel: Conv1D weights (in, out) as our kernels; biases always present (zeros
when bias=False); activation_function "gelu" (exact erf, as ours; not gelu_new);
layer_norm_epsilon = ours (1e-5); n_positions = sequence_length.
GPT + relu2 -> GPT2LMHeadModel with activation_function "relu2" (transformers' ReLU squared).
Llama + qk_norm -> Qwen3ForCausalLM (its q_norm/k_norm: per-head RMSNorm before RoPE; the scales
are permuted like the q/k rows). Llama + gelu/relu2 -> ArceeForCausalLM (non-gated MLP).
Anything else dense -> MiniLLMForCausalLM (custom code; our names, Linear weights (out, in)).
Llama -> LlamaForCausalLM: q/k rows permuted per head from our interleaved RoPE pairs to HF's
rotate-half layout; rms_norm_eps, rope_theta, intermediate_size = our SwiGLU hidden;
attention_bias = bias (our c_attn/c_proj biases are exactly HF's q/k/v/o biases); mlp_bias False.
Both: tie_word_embeddings = tie_embeddings (tied: no lm_head.weight in the file, HF convention).

Writing needs only numpy and safetensors; `transformers` is needed only to load the result.
The tokenizer files (GPT-2 BPE, ids equal to tiktoken's) are written when the vocabulary holds
GPT-2's 50257 ids; otherwise attach one yourself, e.g.
`AutoTokenizer.from_pretrained("openai-community/gpt2").save_pretrained(DIR)`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import ml_collections

from minillm_jax.export.architectures import HF, HF_CUSTOM, REGISTRY, hf_entry
from minillm_jax.export.core import export_arrays, import_arrays, model_config
from minillm_jax.export.errors import ConversionError
from minillm_jax.model.transformer import ModelConfig
from minillm_jax.data.tokenizer import EOT_TOKEN, GPT2_VOCAB

FORMAT = HF
WEIGHTS_NAME = "model.safetensors"
INFO_NAME = "minillm_export.json"


def hf_config(cfg: ModelConfig, custom_code: bool = False) -> dict[str, Any]:
    """config.json for the exported model (readable by transformers 4.40+ and 5.x)."""
    eot = EOT_TOKEN if cfg.vocab_size > EOT_TOKEN else None
    common = {"vocab_size": cfg.vocab_size, "tie_word_embeddings": cfg.tie_embeddings,
              "initializer_range": cfg.init_std, "bos_token_id": eot, "eos_token_id": eot,
              "use_cache": True, "torch_dtype": "float32", "dtype": "float32"}
    entry, _ = hf_entry(cfg, custom_code)
    target = entry.name.split()[0] if entry is REGISTRY[HF_CUSTOM]["custom"] else entry.name.split()[-1]
    if target == "MiniLLMForCausalLM":
        from minillm_jax.export.hf_custom import AUTO_MAP

        return {"architectures": [target], "model_type": "minillm", "auto_map": AUTO_MAP,
                "block_type": cfg.model, "n_layer": cfg.n_layer, "n_embd": cfg.n_embd,
                "n_head": cfg.n_head, "sequence_length": cfg.sequence_length, "bias": cfg.bias,
                "rmsnorm_eps": cfg.rmsnorm_eps, "layernorm_eps": cfg.layernorm_eps,
                "rope_theta": cfg.rope_theta, "block_pattern": list(cfg.sublayer_kinds),
                "mlp_activation": cfg.mlp_activation, "mlp_hidden": cfg.mlp_hidden,
                "qk_norm": cfg.qk_norm, "logit_softcap": cfg.logit_softcap,
                "weighted_residual": cfg.weighted_residual,
                "value_embeddings": cfg.value_embeddings, "smear": cfg.smear,
                "unet_skips": cfg.unet_skips, "attention_window": cfg.attention_window,
                "windowed_layers": list(cfg.windowed_layers), "dropout": cfg.dropout,
                "attention_dropout": cfg.attention_dropout, **common}
    if cfg.model == "gpt":
        return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
                "n_positions": cfg.sequence_length, "n_ctx": cfg.sequence_length,
                "n_embd": cfg.n_embd, "n_layer": cfg.n_layer, "n_head": cfg.n_head,
                "n_inner": cfg.mlp_hidden, "activation_function": cfg.mlp_activation,
                "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout,
                "attn_pdrop": cfg.attention_dropout, "layer_norm_epsilon": cfg.layernorm_eps,
                "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
                "reorder_and_upcast_attn": False, **common}
    if cfg.model == "llama":
        llama = {"hidden_size": cfg.n_embd, "intermediate_size": cfg.mlp_hidden,
                 "num_hidden_layers": cfg.n_layer, "num_attention_heads": cfg.n_head,
                 "num_key_value_heads": cfg.n_head, "head_dim": cfg.head_dim,
                 "hidden_act": "silu", "max_position_embeddings": cfg.sequence_length,
                 "rms_norm_eps": cfg.rmsnorm_eps, "rope_theta": cfg.rope_theta,
                 "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
                 "attention_bias": cfg.bias, "attention_dropout": cfg.attention_dropout,
                 "mlp_bias": False}
        if target == "LlamaForCausalLM":
            return {"architectures": [target], "model_type": "llama", **llama,
                    "pretraining_tp": 1, **common}
        if target == "Qwen3ForCausalLM":
            return {"architectures": [target], "model_type": "qwen3", **llama,
                    "use_sliding_window": False, "sliding_window": None,
                    "max_window_layers": cfg.n_layer,
                    "layer_types": ["full_attention"] * cfg.n_layer, **common}
        if target == "ArceeForCausalLM":
            return {"architectures": [target], "model_type": "arcee", **llama,
                    "hidden_act": cfg.mlp_activation, **common}
    raise ConversionError(f"unknown architecture {cfg.model!r} for format 'hf'")


def save(params: Mapping[str, Any], config: ml_collections.ConfigDict | ModelConfig,
         out_dir: str, tokenizer: bool = True, source: dict | None = None,
         custom_code: bool = False) -> tuple[list[str], list[str]]:
    """Writes the model directory; returns (file names written, notes). The first note says
    which class was written and why (a stock transformers class, or custom code when none
    computes the model exactly or `custom_code` asks for it)."""
    import shutil

    from safetensors.numpy import save_file

    cfg = model_config(config)
    entry, why = hf_entry(cfg, custom_code)
    custom = entry is REGISTRY[HF_CUSTOM]["custom"]
    fmt = HF_CUSTOM if custom else HF
    arrays, notes = export_arrays(params, cfg, fmt)  # refuses first, writes nothing on error
    if custom:
        notes.insert(0, f"wrote custom code (MiniLLMForCausalLM; load with "
                        f"trust_remote_code=True): {why}")
    else:
        notes.insert(0, f"wrote a stock {entry.name} (no custom code): {why}")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf_config(cfg, custom_code), f, indent=2)
    save_file(arrays, os.path.join(out_dir, WEIGHTS_NAME), metadata={"format": "pt"})
    written = ["config.json", WEIGHTS_NAME]
    if custom:
        from minillm_jax.export import hf_custom

        for name in hf_custom.FILES:
            shutil.copyfile(hf_custom.DIR / name, os.path.join(out_dir, name))
            written.append(name)
    if tokenizer and cfg.vocab_size >= GPT2_VOCAB:
        from minillm_jax.export.hf_tokenizer import write_gpt2_tokenizer

        written += write_gpt2_tokenizer(out_dir, cfg.sequence_length)
    elif tokenizer:
        notes.append(f"no tokenizer written: vocab_size={cfg.vocab_size} is smaller than GPT-2's "
                     f"{GPT2_VOCAB} ids")
    with open(os.path.join(out_dir, INFO_NAME), "w") as f:
        json.dump({"exported_by": "minillm_jax.export.hf", "source": source or {},
                   "notes": notes}, f, indent=2)
    written.append(INFO_NAME)
    return written, notes


def load_arrays(model_dir: str) -> dict[str, Any]:
    """The tensors of an exported (or any single-file safetensors) HF model directory."""
    from safetensors.numpy import load_file

    path = os.path.join(model_dir, WEIGHTS_NAME)
    if not os.path.isfile(path):
        raise ConversionError(f"{path} does not exist")
    return load_file(path)


def from_hf(state_dict: Mapping[str, Any], config: ml_collections.ConfigDict | ModelConfig,
            custom_code: bool | None = None) -> dict:
    """HF state dict (the keys `save` writes for this config) -> our params. GPT-2 biases of a
    bias=False config must be zero (else ConversionError). A tied HF model may omit lm_head.
    custom_code: the MiniLLMForCausalLM keys; None: whichever the keys show."""
    cfg = model_config(config)
    state_dict = dict(state_dict)
    if custom_code is None:
        custom_code = "model.wte.weight" in state_dict
    fmt = HF_CUSTOM if custom_code else HF
    if cfg.tie_embeddings and "lm_head.weight" in state_dict:
        embed = ("model.wte.weight" if custom_code else "transformer.wte.weight"
                 if cfg.model == "gpt" else "model.embed_tokens.weight")
        if embed in state_dict:
            import numpy as np

            from minillm_jax.export.mapping import to_numpy

            if not np.array_equal(to_numpy(state_dict[embed]),
                                  to_numpy(state_dict["lm_head.weight"])):
                raise ConversionError(f"lm_head.weight differs from {embed} but the config ties "
                                      "them: use tie_embeddings=False")
            state_dict.pop("lm_head.weight")
    return import_arrays(state_dict, cfg, fmt)
