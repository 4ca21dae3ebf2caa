"""Numeric parity of the exports: our JAX model vs an independent PyTorch llm-baselines model
(tests/export/torch_reference.py) and vs transformers' GPT2LMHeadModel / LlamaForCausalLM.

fp32 on CPU, random weights (every parameter is noise), random tokens: logits relative error
<= 1e-5, loss equal to 1e-6, gradients of the training loss <= 1e-4 relative (per tensor,
max |diff| / max |ref|), every parameter compared.
"""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minillm_jax import export
from tests.export import torch_reference
from tests.export.common import jax_results, record, rel_err

LOGITS_TOL, LOSS_TOL, GRAD_TOL = 1e-5, 1e-6, 1e-4
TIED = [("gpt", False), ("gpt", True), ("llama", False), ("llama", True)]


def _compare(name, logits, loss, torch_logits, torch_loss, our_grads, torch_grads):
    errors = {"logits_rel": rel_err(torch_logits, logits),
              "loss_abs": abs(float(torch_loss) - loss),
              "grad_rel": max(rel_err(torch_grads[k], our_grads[k]) for k in torch_grads)}
    record(name, **errors)
    worst = max(torch_grads, key=lambda k: rel_err(torch_grads[k], our_grads[k]))
    assert errors["logits_rel"] <= LOGITS_TOL, errors
    assert errors["loss_abs"] <= LOSS_TOL, errors
    assert errors["grad_rel"] <= GRAD_TOL, (worst, errors)


@pytest.mark.parametrize("model,bias", TIED)
def test_llm_baselines_parity(model, bias, tmp_path):
    config, params, idx, targets, logits, loss, grads = jax_results(model, bias, True)
    pt, args_path, _ = export.llm_baselines.save(params, config, str(tmp_path / "model.pt"))
    with open(args_path) as f:
        args = json.load(f)
    assert args["model"] == {"gpt": "base", "llama": "llama2"}[model]
    assert args["bias"] is bias and args["n_layer"] == 2 and args["vocab_size"] == 512

    ref = torch_reference.build(args)
    state_dict = torch.load(pt, weights_only=True)
    expected = ref.state_dict()
    assert list(state_dict) == list(expected)  # exact keys, in the module's order
    for key, tensor in state_dict.items():
        assert tensor.shape == expected[key].shape and tensor.dtype == torch.float32, key
    assert "lm_head.weight" in state_dict and "transformer.wte.weight" in state_dict
    assert torch.equal(state_dict["lm_head.weight"], state_dict["transformer.wte.weight"])
    assert not any("freqs_cis" in k for k in state_dict)
    ref.load_state_dict(state_dict, strict=True)
    ref.eval()

    out = ref(torch.from_numpy(idx), torch.from_numpy(targets))
    out["loss"].backward()
    torch_grads = {k: p.grad.numpy() for k, p in ref.named_parameters()}
    our_grads, _ = export.export_arrays(grads, config, "llm-baselines")
    _compare(f"llm-baselines {model} bias={bias}", logits, loss, out["logits"].detach().numpy(),
             out["loss"].item(), our_grads, torch_grads)


@pytest.mark.parametrize("model,bias,tied", [(m, b, True) for m, b in TIED]
                         + [("gpt", False, False), ("llama", True, False)])
def test_hf_parity(model, bias, tied, tmp_path):
    transformers = pytest.importorskip("transformers")
    config, params, idx, targets, logits, loss, grads = jax_results(model, bias, tied)
    out_dir = str(tmp_path / "hf")
    export.hf.save(params, config, out_dir, tokenizer=False)
    hf, info = transformers.AutoModelForCausalLM.from_pretrained(out_dir, output_loading_info=True)
    assert type(hf).__name__ == {"gpt": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}[model]
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert next(hf.parameters()).dtype == torch.float32

    # every weight HF holds is exactly what we wrote (nothing randomly initialised)
    written = export.hf.load_arrays(out_dir)
    embed = "transformer.wte.weight" if model == "gpt" else "model.embed_tokens.weight"
    params_hf = dict(hf.named_parameters())
    assert (hf.get_output_embeddings().weight is hf.get_input_embeddings().weight) == tied
    for key, p in params_hf.items():
        source = written[embed] if (key == "lm_head.weight" and tied) else written[key]
        assert np.array_equal(p.detach().numpy(), source), key

    hf.eval()
    torch_logits = hf(input_ids=torch.from_numpy(idx)).logits
    torch_loss = F.cross_entropy(torch_logits.reshape(-1, torch_logits.shape[-1]),
                                 torch.from_numpy(targets).reshape(-1))
    torch_loss.backward()
    synthetic = export.synthetic_keys(config, "hf")  # GPT-2 zero biases of bias=False models
    torch_grads = {k: p.grad.numpy() for k, p in params_hf.items() if k not in synthetic}
    our_grads, _ = export.export_arrays(grads, config, "hf")
    assert set(torch_grads) == set(our_grads) - synthetic
    _compare(f"hf {model} bias={bias} tied={tied}", logits, loss,
             torch_logits.detach().numpy(), torch_loss.item(), our_grads, torch_grads)
