"""Hugging Face transformers export: a model directory that `AutoModelForCausalLM.from_pretrained`
loads with no custom code (config.json + model.safetensors [+ GPT-2 tokenizer files]).

GPT -> GPT2LMHeadModel: Conv1D weights (in, out) as our kernels; biases always present (zeros
when bias=False); activation_function "gelu" (exact erf, as ours; not gelu_new);
layer_norm_epsilon = ours (1e-5); n_positions = sequence_length.
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

from minillm_jax.export.architectures import HF
from minillm_jax.export.core import export_arrays, import_arrays, model_config
from minillm_jax.export.errors import ConversionError
from minillm_jax.model import ModelConfig
from minillm_jax.tokenizer import EOT_TOKEN, GPT2_VOCAB

FORMAT = HF
WEIGHTS_NAME = "model.safetensors"
INFO_NAME = "minillm_export.json"


def hf_config(cfg: ModelConfig) -> dict[str, Any]:
    """config.json for the exported model (readable by transformers 4.40+ and 5.x)."""
    eot = EOT_TOKEN if cfg.vocab_size > EOT_TOKEN else None
    common = {"vocab_size": cfg.vocab_size, "tie_word_embeddings": cfg.tie_embeddings,
              "initializer_range": cfg.init_std, "bos_token_id": eot, "eos_token_id": eot,
              "use_cache": True, "torch_dtype": "float32", "dtype": "float32"}
    if cfg.model == "gpt":
        return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
                "n_positions": cfg.sequence_length, "n_ctx": cfg.sequence_length,
                "n_embd": cfg.n_embd, "n_layer": cfg.n_layer, "n_head": cfg.n_head,
                "n_inner": cfg.mlp_hidden, "activation_function": "gelu",
                "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout,
                "attn_pdrop": cfg.attention_dropout, "layer_norm_epsilon": cfg.layernorm_eps,
                "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
                "reorder_and_upcast_attn": False, **common}
    if cfg.model == "llama":
        return {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                "hidden_size": cfg.n_embd, "intermediate_size": cfg.mlp_hidden,
                "num_hidden_layers": cfg.n_layer, "num_attention_heads": cfg.n_head,
                "num_key_value_heads": cfg.n_head, "head_dim": cfg.head_dim,
                "hidden_act": "silu", "max_position_embeddings": cfg.sequence_length,
                "rms_norm_eps": cfg.rmsnorm_eps, "rope_theta": cfg.rope_theta,
                "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
                "attention_bias": cfg.bias, "attention_dropout": cfg.attention_dropout,
                "mlp_bias": False, "pretraining_tp": 1, **common}
    raise ConversionError(f"unknown architecture {cfg.model!r} for format 'hf'")


def save(params: Mapping[str, Any], config: ml_collections.ConfigDict | ModelConfig,
         out_dir: str, tokenizer: bool = True, source: dict | None = None,
         ) -> tuple[list[str], list[str]]:
    """Writes the model directory; returns (file names written, notes)."""
    from safetensors.numpy import save_file

    cfg = model_config(config)
    arrays, notes = export_arrays(params, cfg, FORMAT)  # refuses first, writes nothing on error
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf_config(cfg), f, indent=2)
    save_file(arrays, os.path.join(out_dir, WEIGHTS_NAME), metadata={"format": "pt"})
    written = ["config.json", WEIGHTS_NAME]
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
            ) -> dict:
    """HF state dict (GPT2LMHeadModel / LlamaForCausalLM keys) -> our params. GPT-2 biases of a
    bias=False config must be zero (else ConversionError). A tied HF model may omit lm_head."""
    cfg = model_config(config)
    state_dict = dict(state_dict)
    if cfg.tie_embeddings and "lm_head.weight" in state_dict:
        embed = "transformer.wte.weight" if cfg.model == "gpt" else "model.embed_tokens.weight"
        if embed in state_dict:
            import numpy as np

            from minillm_jax.export.mapping import to_numpy

            if not np.array_equal(to_numpy(state_dict[embed]),
                                  to_numpy(state_dict["lm_head.weight"])):
                raise ConversionError(f"lm_head.weight differs from {embed} but the config ties "
                                      "them: use tie_embeddings=False")
            state_dict.pop("lm_head.weight")
    return import_arrays(state_dict, cfg, FORMAT)
