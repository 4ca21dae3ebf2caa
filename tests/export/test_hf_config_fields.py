"""The architecture numbers that only config.json carries (norm epsilons, RoPE's theta, the SwiGLU
hidden size that multiple_of rounds to) reach the loaded transformers model.

At the defaults (1e-5, 10000, 256) a field missing from config.json can go unnoticed: the
transformers class may default to the same value. So every case here sets non-default values
(distinct epsilons, so that a swap shows too), checks config.json holds them, checks that our
model's logits move by far more than the tolerance when any one of them is put back to its
default (so a dropped field fails the logits comparison), and compares float32 logits.
"""

import json

import pytest

from minillm_jax.model.transformer import ModelConfig
from tests.export.common import batch, rel_err, tiny_config

pytest.importorskip("transformers")

from tests.export.test_hf_options import (  # noqa: E402  (needs transformers)
    CUSTOM, LOGITS_TOL, _export_and_compare, _jax_logits)

NON_DEFAULT = dict(rmsnorm_eps=4e-3, layernorm_eps=2e-3, rope_theta=500.0, multiple_of=32)
# config.json keys of each field, per target class (multiple_of: the hidden size it rounds to)
LLAMA_KEYS = {"rmsnorm_eps": ["rms_norm_eps"], "rope_theta": ["rope_theta",
                                                              "rope_parameters.rope_theta"],
              "multiple_of": ["intermediate_size"]}
KEYS = {"GPT2LMHeadModel": {"layernorm_eps": ["layer_norm_epsilon"]},
        "LlamaForCausalLM": LLAMA_KEYS, "Qwen3ForCausalLM": LLAMA_KEYS,
        "ArceeForCausalLM": LLAMA_KEYS,
        CUSTOM: {"rmsnorm_eps": ["rmsnorm_eps"], "layernorm_eps": ["layernorm_eps"],
                 "rope_theta": ["rope_theta"], "multiple_of": ["mlp_hidden"]}}


def _fields(*names: str) -> dict:
    return {name: NON_DEFAULT[name] for name in names}


# the fields each model uses: gpt's qk_norm is an RMSNorm (rmsnorm_eps) beside its LayerNorms;
# multiple_of only shapes a SwiGLU MLP
LLAMA = _fields("rmsnorm_eps", "rope_theta")
SWIGLU = _fields("rmsnorm_eps", "rope_theta", "multiple_of")
CASES = [
    ("gpt", "gpt", _fields("layernorm_eps"), "GPT2LMHeadModel"),
    ("gpt qk_norm", "gpt", dict(_fields("layernorm_eps", "rmsnorm_eps"), qk_norm=True), CUSTOM),
    ("llama", "llama", SWIGLU, "LlamaForCausalLM"),
    ("llama qk_norm", "llama", dict(SWIGLU, qk_norm=True), "Qwen3ForCausalLM"),
    ("llama relu2", "llama", dict(LLAMA, mlp_activation="relu2"), "ArceeForCausalLM"),
    ("llama softcap qk_norm", "llama", dict(SWIGLU, logit_softcap=3.0, qk_norm=True), CUSTOM),
]


def _json_value(hf_config: dict, key: str) -> object:
    for part in key.split("."):
        hf_config = hf_config[part]
    return hf_config


@pytest.mark.parametrize("name,model,overrides,expected", CASES, ids=[c[0] for c in CASES])
def test_non_default_fields_reach_the_loaded_model(name, model, overrides, expected, tmp_path):
    default = ModelConfig.from_flat(tiny_config(model).to_dict())
    hf, _, _, config, params = _export_and_compare(f"{name} non-default fields", model,
                                                   overrides, False, tmp_path)
    assert type(hf).__name__ == expected
    ours = ModelConfig.from_flat(config.to_dict())
    hf_config = json.loads((tmp_path / "hf" / "config.json").read_text())
    idx, _ = batch(config)  # the tokens _export_and_compare compared the logits on
    want = _jax_logits(config, params, idx)
    for field in set(overrides) & set(NON_DEFAULT):
        assert getattr(ours, field) == NON_DEFAULT[field] != getattr(default, field), field
        value = ours.mlp_hidden if field == "multiple_of" else getattr(ours, field)
        for key in KEYS[expected][field]:
            assert _json_value(hf_config, key) == value, (field, key)
        if field == "multiple_of":  # another hidden size: a missing one cannot load the weights
            assert ours.mlp_hidden != default.mlp_hidden
            continue
        # the field matters: at its default our logits differ by far more than the tolerance
        at_default = tiny_config(model, tied=config.tie_embeddings,
                                 **{**overrides, field: getattr(default, field)})
        moved = rel_err(_jax_logits(at_default, params, idx), want)
        assert moved > 100 * LOGITS_TOL, (field, moved)
