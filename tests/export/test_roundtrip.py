"""Bit-exact round trips (JAX -> torch -> JAX), through the API, the checkpoint and the CLIs."""

import json

import numpy as np
import pytest
import torch

from minillm_jax import export
from minillm_jax.train import checkpointing
from minillm_jax.export import from_torch, to_torch
from minillm_jax.export.mapping import flatten
from tests.conftest import REPO
from tests.export.common import random_params, tiny_config

ALL = [(m, b, t) for m in ("gpt", "llama") for b in (False, True) for t in (True, False)]


def assert_bit_exact(got, want):
    got, want = flatten(got), flatten(want)
    assert sorted(got) == sorted(want)
    for key in want:
        a, b = np.asarray(got[key]), np.asarray(want[key])
        assert a.dtype == np.float32 and a.shape == b.shape, key
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32)), key


@pytest.mark.parametrize("model,bias,tied", ALL)
def test_api_round_trip_is_bit_exact(model, bias, tied):
    config = tiny_config(model, bias, tied)
    params = random_params(config, seed=3)
    formats = ["hf"] + (["llm-baselines"] if tied else [])
    for fmt in formats:
        arrays, _ = export.export_arrays(params, config, fmt)
        assert set(arrays) == set(export.expected_keys(config, fmt))
        tensors = {k: torch.from_numpy(v.copy()) for k, v in arrays.items()}
        back = (export.hf.from_hf(tensors, config) if fmt == "hf"
                else export.llm_baselines.from_torch(tensors, config))
        assert_bit_exact(back, params)


def test_llm_baselines_refuses_untied_models():
    config = tiny_config("llama", tied=False)
    with pytest.raises(export.ConversionError, match="untied embeddings") as err:
        export.export_arrays(random_params(config), config, "llm-baselines")
    assert "--format hf" in str(err.value)


def test_untied_state_dict_imports_only_when_asked():
    """Distinct wte/lm_head (llm-baselines HEAD --untied_embeds) are not silently tied."""
    tied_cfg = tiny_config("gpt")
    sd = {k: torch.from_numpy(v.copy()) for k, v in
          export.export_arrays(random_params(tied_cfg), tied_cfg, "llm-baselines")[0].items()}
    sd["lm_head.weight"] = sd["lm_head.weight"] + 1e-3
    with pytest.raises(export.ConversionError, match="differ.*--untied"):
        export.llm_baselines.from_torch(sd, tied_cfg)
    base = tiny_config("gpt")
    config = export.llm_baselines.config_from_args({"untied_embeds": True}, base)
    assert config.tie_embeddings is False
    params = export.llm_baselines.from_torch(sd, config)
    np.testing.assert_array_equal(params["lm_head"]["kernel"], sd["lm_head.weight"].numpy().T)


def test_cli_round_trip_through_checkpoints(tmp_path, capsys):
    """save_params -> export.to_torch -> export.from_torch -> load_params, bit-exact; the
    import also accepts a compiled model's `_orig_mod.` keys inside a {'model': ...} checkpoint."""
    config = tiny_config("llama", bias=True)
    params = random_params(config, seed=5)
    run = str(tmp_path / "run")
    checkpointing.save_params(run, config, params, step=7)

    pt = str(tmp_path / "model.pt")
    assert to_torch.main(["--workdir", run, "--format", "llm-baselines", "--out", pt]) == 0
    printed = capsys.readouterr().out
    assert "--model llama2" in printed and "--bias True" in printed
    args = json.loads((tmp_path / "model.args.json").read_text())
    assert args["model"] == "llama2" and args["n_embd"] == 64 and args["multiple_of"] == 256

    state_dict = torch.load(pt, weights_only=True)
    compiled = {"model": {f"_orig_mod.{k}": v for k, v in state_dict.items()}, "itr": 7,
                "optimizer": {}}
    torch.save(compiled, tmp_path / "ckpt.pt")
    out = str(tmp_path / "imported")
    assert from_torch.main(["--state-dict", str(tmp_path / "ckpt.pt"), "--args",
                            str(tmp_path / "model.args.json"), "--workdir", out]) == 0
    loaded_config, loaded, step = checkpointing.load_params(out)
    assert step == 7 and loaded_config.model.model == "llama" and loaded_config.model.bias is True
    assert_bit_exact(loaded, params)

    # a second import into the same workdir is refused rather than mixed with it
    assert from_torch.main(["--state-dict", pt, "--args", str(tmp_path / "model.args.json"),
                            "--workdir", out]) == 2
    assert "already holds checkpoints" in capsys.readouterr().err

    # --config supplies the fields the args do not set (here the demo's log_freq)
    out2 = str(tmp_path / "imported2")
    assert from_torch.main(["--state-dict", pt, "--config", str(REPO / "configs" / "demo_2023.py"),
                            "--args", str(tmp_path / "model.args.json"), "--workdir", out2]) == 0
    loaded_config, loaded, step = checkpointing.load_params(out2)
    assert step == 0 and loaded_config.run.log_freq == 25 and loaded_config.model.n_layer == 2
    assert_bit_exact(loaded, params)


def test_cli_hf_export(tmp_path, capsys):
    config = tiny_config("gpt", bias=False, tied=False)
    params = random_params(config, seed=6)
    run = str(tmp_path / "run")
    checkpointing.save_params(run, config, params, step=3)
    out = tmp_path / "hf"
    assert to_torch.main(["--workdir", run, "--format", "hf", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "zeros" in printed and "no tokenizer" in printed  # notes are shown
    hf_config = json.loads((out / "config.json").read_text())
    assert hf_config["activation_function"] == "gelu" and hf_config["n_positions"] == 32
    assert hf_config["layer_norm_epsilon"] == 1e-5 and hf_config["tie_word_embeddings"] is False
    back = export.hf.from_hf(export.hf.load_arrays(str(out)), config)
    assert_bit_exact(back, params)
    # llm-baselines refuses this untied model: exit 2, one message, no traceback
    assert to_torch.main(["--workdir", run, "--format", "llm-baselines",
                          "--out", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "untied" in err and "Traceback" not in err
    assert not (tmp_path / "m.pt").exists()
