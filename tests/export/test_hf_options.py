"""Every dense option exports to Hugging Face: to a stock transformers class where one computes
the model exactly, else to the custom-code MiniLLMForCausalLM; float32 logits equal to ours.

Independent formulations: transformers' own GPT2/Llama/Qwen3/Arcee classes, and the PyTorch
MiniLLM written from the model's definition (minillm_jax/export/hf_custom/), each against the
JAX model, on random weights (every parameter noise) and random tokens.
"""

import copy
import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from minillm_jax import export
from minillm_jax.model.transformer import ModelConfig, Transformer
from tests.export.common import (
    MODERN, batch, logits_mismatch, pinned_torch, random_params, record, rel_err, tiny_config)

transformers = pytest.importorskip("transformers")

# Measured: 5e-7 to 1.2e-6 over the cases; [gpt softcap bias] gives 6.219e-7, the same bits in
# 50 runs beside two busy processes and for 1 to 16 torch threads, and a 1-ulp change of every
# weight moves its logits by at most 9e-7. So float32 rounding, in whatever order, stays well
# below this bound; a failure is something else, and its message says which side changed.
LOGITS_TOL = 1e-5
CUSTOM = "MiniLLMForCausalLM"

# (case, model, overrides, expected class)
CASES = [
    ("gpt relu2", "gpt", dict(mlp_activation="relu2"), "GPT2LMHeadModel"),
    ("gpt relu2 bias untied", "gpt", dict(mlp_activation="relu2", bias=True, tied=False),
     "GPT2LMHeadModel"),
    ("gpt qk_norm", "gpt", dict(qk_norm=True), CUSTOM),
    ("gpt swiglu", "gpt", dict(mlp_activation="swiglu"), CUSTOM),
    ("gpt softcap bias", "gpt", dict(logit_softcap=3.0, bias=True), CUSTOM),
    ("gpt modern", "gpt", dict(MODERN), CUSTOM),
    ("llama qk_norm", "llama", dict(qk_norm=True), "Qwen3ForCausalLM"),
    ("llama qk_norm bias untied", "llama", dict(qk_norm=True, bias=True, tied=False),
     "Qwen3ForCausalLM"),
    ("llama relu2", "llama", dict(mlp_activation="relu2"), "ArceeForCausalLM"),
    ("llama gelu bias untied", "llama", dict(mlp_activation="gelu", bias=True, tied=False),
     "ArceeForCausalLM"),
    ("llama softcap", "llama", dict(logit_softcap=3.0), CUSTOM),
    ("llama gelu qk_norm tied", "llama", dict(mlp_activation="gelu", qk_norm=True), CUSTOM),
    ("llama modern", "llama", dict(MODERN), CUSTOM),
    ("llama modern bias softcap zero_init", "llama",
     dict(MODERN, bias=True, logit_softcap=3.0, zero_init_proj=True), CUSTOM),
    ("llama weighted_residual", "llama", dict(weighted_residual=True), CUSTOM),
    ("gpt weighted_residual untied", "gpt", dict(weighted_residual=True, tied=False), CUSTOM),
    ("llama mlp,attn", "llama", dict(block_pattern="mlp,attn", qk_norm=True), CUSTOM),
    # modded-nanogpt embeddings: 3 layers, so that the middle one has no value embedding
    ("llama value_embeddings smear", "llama",
     dict(MODERN, n_layer=3, value_embeddings=1, smear=True), CUSTOM),
    ("gpt window all untied", "gpt", dict(attention_window=4, tied=False), CUSTOM),
]


def _config(model, overrides):
    overrides = dict(overrides)
    tied = overrides.pop("tied", overrides.pop("tie_embeddings", True))
    return tiny_config(model, tied=tied, **overrides)


def _jax_logits(config, params, idx):
    net = Transformer(ModelConfig.from_flat(config.to_dict()))
    return np.asarray(net.apply({"params": params}, jnp.asarray(idx, jnp.int32), train=False))


def _torch_logits(hf, idx):
    with torch.no_grad(), pinned_torch():
        return hf(input_ids=torch.from_numpy(idx)).logits.numpy()


def _load(out_dir, custom):
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        out_dir, trust_remote_code=custom, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return model.eval()


def _check_weights_loaded(model, out_dir, tied):
    """Every weight the torch model holds is exactly what was written (nothing initialised)."""
    written = export.hf.load_arrays(out_dir)
    embed = model.get_input_embeddings().weight
    assert (model.get_output_embeddings().weight is embed) == tied
    for key, p in model.named_parameters():
        source = written.get(key)
        if source is None and key == "lm_head.weight":
            continue  # tied: the same tensor as the embeddings
        assert source is not None, f"{key} was not written"
        assert np.array_equal(p.detach().numpy(), source), key
    assert {k for k, _ in model.named_parameters()} >= set(written) - {"lm_head.weight"}


def _export_and_compare(name, model, overrides, custom_code, tmp_path):
    config = _config(model, overrides)
    params = random_params(config, seed=11)
    idx, _ = batch(config)
    out_dir = str(tmp_path / "hf")
    written, notes = export.hf.save(params, config, out_dir, tokenizer=False,
                                    custom_code=custom_code)
    hf = _load(out_dir, custom="modeling_minillm.py" in written)
    _check_weights_loaded(hf, out_dir, config.tie_embeddings)
    got = _torch_logits(hf, idx)
    want = _jax_logits(config, params, idx)
    err = rel_err(got, want)
    record(f"hf {name}" + (" (custom code)" if custom_code else ""), logits_rel=err,
           loss_abs=float("nan"), grad_rel=float("nan"))
    assert got.dtype == np.float32
    assert err <= LOGITS_TOL, logits_mismatch(
        got, want, lambda: _torch_logits(hf, idx), lambda: _jax_logits(config, params, idx),
        lambda: _torch_logits(copy.deepcopy(hf).double(), idx))
    assert np.std(want) > 0.1  # not a degenerate model
    return hf, written, notes, config, params


@pytest.mark.parametrize("name,model,overrides,expected", CASES, ids=[c[0] for c in CASES])
def test_every_option_exports_with_equal_logits(name, model, overrides, expected, tmp_path):
    hf, written, notes, _, _ = _export_and_compare(name, model, overrides, False, tmp_path)
    assert type(hf).__name__ == expected
    hf_config = json.loads((tmp_path / "hf" / "config.json").read_text())
    if expected == CUSTOM:
        assert {"configuration_minillm.py", "modeling_minillm.py"} <= set(written)
        assert hf_config["auto_map"]["AutoModelForCausalLM"] == \
            "modeling_minillm.MiniLLMForCausalLM"
        assert notes[0].startswith("wrote custom code") and "no stock" in notes[0]
    else:
        assert not any(w.endswith(".py") for w in written) and "auto_map" not in hf_config
        assert notes[0].startswith(f"wrote a stock transformers {expected}")


@pytest.mark.parametrize("model,bias,tied", [("gpt", True, True), ("llama", False, False),
                                             ("llama", True, True)])
def test_custom_code_on_the_stock_models(model, bias, tied, tmp_path):
    """The custom model also computes the 2023 recipe's GPT/Llama (--custom-code)."""
    hf, _, notes, _, _ = _export_and_compare(f"{model} bias={bias} tied={tied}", model,
                                             dict(bias=bias, tied=tied), True, tmp_path)
    assert type(hf).__name__ == CUSTOM and "--custom-code" in notes[0]


def test_zero_init_proj_changes_only_the_initialisation():
    base, zero = _config("llama", MODERN), _config("llama", dict(MODERN, zero_init_proj=True))
    assert export.expected_keys(base, "hf") == export.expected_keys(zero, "hf")
    assert ModelConfig.from_flat(zero.to_dict()).identity() == \
        ModelConfig.from_flat(base.to_dict()).identity()


def test_custom_code_round_trip_is_bit_exact():
    config = _config("llama", dict(MODERN, weighted_residual=True, bias=True))
    params = random_params(config, seed=2)
    arrays, _ = export.export_arrays(params, config, "hf")
    assert "model.blocks.1.attn.q_norm.weight" in arrays and "lm_head.weight" in arrays
    back = export.hf.from_hf({k: torch.from_numpy(v.copy()) for k, v in arrays.items()}, config)
    from tests.export.test_roundtrip import assert_bit_exact

    assert_bit_exact(back, params)


def test_moe_is_refused_in_one_line(tmp_path):
    config = tiny_config("llama", block_pattern="attn,moe", moe_n_experts=4)
    with pytest.raises(export.ConversionError) as err:
        export.hf.save(random_params(config), config, str(tmp_path / "x"))
    message = str(err.value)
    assert "\n" not in message and "MoE" in message and "would need" in message
    assert not (tmp_path / "x").exists()


def _greedy_jax(config, params, prompt, n):
    from minillm_jax.model.generation import generate_tokens

    net = Transformer(ModelConfig.from_flat(config.to_dict()))
    return generate_tokens(net, params, prompt, max_new_tokens=n, temperature=0.0)


@pytest.mark.parametrize("name,model,overrides,custom_code", [
    ("llama modern", "llama", dict(MODERN, logit_softcap=3.0), False),
    ("gpt modern weighted_residual", "gpt", dict(MODERN, weighted_residual=True), False),
    ("llama qk_norm (Qwen3)", "llama", dict(qk_norm=True), False),
    ("gpt value_embeddings smear weighted_residual", "gpt",
     dict(n_layer=3, value_embeddings=1, smear=True, weighted_residual=True), False),
    # also the export parity of unet_skips (odd depth) and a per-layer window pattern
    ("llama unet_skips window alternate", "llama",
     dict(n_layer=3, unet_skips=True, attention_window=4, attention_window_layers="alternate"),
     False),
])
def test_generate_matches_our_kv_cache_greedy_decoding(name, model, overrides, custom_code,
                                                       tmp_path):
    """transformers' generate (its KV cache, our modeling code's cache handling) == our KV-cache
    greedy decoding, token for token; and a left-padded batch gives each row's own tokens."""
    hf, _, _, config, params = _export_and_compare(name, model, overrides, custom_code, tmp_path)
    prompts = [[5, 17, 300, 42, 9], [7, 1]]
    n = 12  # the longest prompt + n stays within sequence_length (32)
    want = [_greedy_jax(config, params, p, n) for p in prompts]
    for prompt, expected in zip(prompts, want):
        out = hf.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False,
                          pad_token_id=0)
        assert out[0, len(prompt):].tolist() == expected
    # a left-padded batch: position_ids from the attention mask keep each row's positions
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    out = hf.generate(ids, attention_mask=mask, max_new_tokens=n, do_sample=False, pad_token_id=0)
    assert [row[width:].tolist() for row in out] == want


def test_custom_code_needs_trust_remote_code_and_tokenizer_loads(tmp_path):
    """Custom code loads only with trust_remote_code=True, and without minillm_jax; the stock
    export loads without it; AutoTokenizer loads both directories either way."""
    import subprocess
    import sys

    config = _config("llama", dict(MODERN, n_layer=1, vocab_size=50304))
    custom_dir = str(tmp_path / "custom")
    export.hf.save(random_params(config), config, custom_dir)
    with pytest.raises(ValueError, match="trust_remote_code"):
        transformers.AutoModelForCausalLM.from_pretrained(custom_dir)
    stock_config = _config("llama", dict(n_layer=1, vocab_size=50304))
    stock_dir = str(tmp_path / "stock")
    export.hf.save(random_params(stock_config), stock_config, stock_dir)
    assert type(transformers.AutoModelForCausalLM.from_pretrained(stock_dir)).__name__ == \
        "LlamaForCausalLM"
    for directory in (custom_dir, stock_dir):
        for trust in (False, True):
            tok = transformers.AutoTokenizer.from_pretrained(directory, trust_remote_code=trust)
            assert tok("Hello world")["input_ids"] == [15496, 995] and tok.eos_token_id == 50256
    # a fresh interpreter in which minillm_jax cannot be imported loads and runs it
    code = ("import sys; sys.modules['minillm_jax'] = None\n"
            "import torch, transformers\n"
            f"m = transformers.AutoModelForCausalLM.from_pretrained({custom_dir!r}, "
            "trust_remote_code=True)\n"
            f"t = transformers.AutoTokenizer.from_pretrained({custom_dir!r})\n"
            "out = m.generate(**t('Hello', return_tensors='pt'), max_new_tokens=3, "
            "do_sample=False)\n"
            "print(type(m).__name__, out.shape[1])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                               "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-2:] == ["MiniLLMForCausalLM", "4"]


def test_cli_exports_a_schedule_free_modern_run(tmp_path, shakespeare_dir, capsys):
    """tools/convert_to_torch.py --format hf on a trained schedule-free run with the modern
    recipe's model: custom code, said so and why, holding schedule-free's averaged parameters
    x (what load_params gives), not the iterate y the optimizer steps."""
    from minillm_jax.train.checkpointing import load_params, restore_params
    from minillm_jax.export import to_torch
    from minillm_jax.train.trainer import train
    from tests.conftest import tiny_config as run_config

    config = run_config(data_dir=shakespeare_dir, workdir=str(tmp_path / "sf"), opt="sfadamw",
                        iterations=4, eval_freq=100, scheduler="constant", model="llama",
                        **{k: v for k, v in MODERN.items() if k != "opt"})
    train(config)
    out = tmp_path / "hf"
    assert to_torch.main(["--workdir", config.workdir, "--format", "hf", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "wrote custom code" in printed and "qk_norm=True with a non-gated" in printed
    loaded_config, params, step = load_params(config.workdir)
    iterate = restore_params(config.workdir, step, params)
    hf = _load(str(out), custom=True)
    idx = np.random.default_rng(0).integers(0, 50257, (2, 16))
    got = _torch_logits(hf, idx)
    net = Transformer(loaded_config.model)
    want = np.asarray(net.apply({"params": params}, jnp.asarray(idx, jnp.int32)))
    raw = np.asarray(net.apply({"params": iterate}, jnp.asarray(idx, jnp.int32)))
    assert rel_err(got, want) <= LOGITS_TOL
    assert rel_err(raw, want) > 1e-3  # the averaged parameters really differ from the iterate
    tok = transformers.AutoTokenizer.from_pretrained(str(out))
    assert tok.eos_token_id == 50256


def test_cli_custom_code_flag_writes_custom_code_that_loads(tmp_path, capsys):
    """tools/convert_to_torch.py --format hf --custom-code, run as a command on a checkpoint of a
    model a stock class computes (Llama with biases): the directory holds the custom code, loads
    with trust_remote_code=True from that directory and gives our logits; without the flag the
    same checkpoint exports to LlamaForCausalLM."""
    import subprocess
    import sys

    from minillm_jax.export import to_torch
    from minillm_jax.train.checkpointing import save_params
    from tests.conftest import REPO

    config = _config("llama", dict(bias=True))
    params = random_params(config, seed=8)
    run = str(tmp_path / "run")
    save_params(run, config, params, step=5)
    out = tmp_path / "custom"
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "convert_to_torch.py"),
                           "--workdir", run, "--format", "hf", "--out", str(out),
                           "--custom-code"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "wrote custom code" in proc.stdout and "custom code was asked for" in proc.stdout
    hf_config = json.loads((out / "config.json").read_text())
    assert hf_config["architectures"] == [CUSTOM] and "auto_map" in hf_config
    assert (out / "modeling_minillm.py").is_file()
    hf = _load(str(out), custom=True)
    assert type(hf).__name__ == CUSTOM
    _check_weights_loaded(hf, str(out), tied=True)
    idx, _ = batch(config)
    assert rel_err(_torch_logits(hf, idx), _jax_logits(config, params, idx)) <= LOGITS_TOL

    stock = tmp_path / "stock"
    assert to_torch.main(["--workdir", run, "--format", "hf", "--out", str(stock)]) == 0
    assert "wrote a stock transformers LlamaForCausalLM" in capsys.readouterr().out
    assert json.loads((stock / "config.json").read_text())["architectures"] == \
        ["LlamaForCausalLM"]
    assert not (stock / "modeling_minillm.py").exists()
