"""The train step compiled by the real XLA GPU compiler on this CPU machine (deviceless AOT):
what minillm_jax.experiments.gpu_aot reports, checked against the compiled executable itself.

These need JAX's CUDA plugin (the `cuda12` extra), not a GPU. Without it they skip with the
reason, except in CI (CI=true), where a skip would hide that the GPU program was never compiled:
there they fail.
"""

from __future__ import annotations

import json
import os
import re

import pytest

from minillm_jax.experiments.aot import targets
from tests.conftest import REPO, tiny_config


def _require_plugin() -> None:
    if not targets.cuda_plugin_missing():
        return
    if os.environ.get("CI"):
        pytest.fail("CI must install JAX's CUDA plugin (.ci/run: the cuda12 extra) so that the "
                    "GPU program is compiled; it is missing")
    pytest.skip('JAX\'s CUDA plugin is not installed (pip install -e ".[cuda12]")')


@pytest.fixture(autouse=True)
def cuda_plugin():
    _require_plugin()


def _config(name: str, **overrides):
    from minillm_jax.config import build_config, load_config

    config = load_config(REPO / "configs" / f"{name}.py")
    config.update(dict(compilation_cache="off", **overrides))
    return build_config(config, name)


@pytest.fixture(scope="module")
def best_fused_h100():
    """configs/best_fused.py as configured (18 x 768, remat=save_named, cuDNN attention) at batch
    4 for an H100: the full layer structure, a small batch to keep CI fast."""
    _require_plugin()
    from minillm_jax.experiments.aot.report import analyse

    target = targets.load_target("h100")
    step = targets.compile_train_step(_config("best_fused", batch_size=4), target)
    return step, analyse(step, target, 1, "best_fused")


def test_best_fused_runs_cudnn_attention_and_bf16_gemms_on_an_h100(best_fused_h100):
    """The compiled (optimised, scheduled) program, not the lowering: XLA kept the cuDNN fused
    attention forward and backward, and every GEMM kernel it emitted multiplies bf16 operands,
    the output layer's included."""
    step, report = best_fused_h100
    text = step.compiled.as_text()
    assert set(re.findall(r'custom_call_target="(__cudnn\$fmha\w+)"', text)) == {
        "__cudnn$fmhaSoftmax", "__cudnn$fmhaSoftmaxBackward"}
    assert report["cudnn_calls"] == ["__cudnn$fmhaSoftmax", "__cudnn$fmhaSoftmaxBackward"]
    gemms = [k for k in report["kernels"] if k["kind"] == "gemm"]
    assert len(gemms) >= 10
    assert [k for k in gemms if k["operand_dtypes"] != ["bf16", "bf16"]] == []
    # resolved for the GPU, not for this CPU: autodiff's dots, not the CPU's transposed form
    assert step.run.config.execution.dense_weight_grad == "xla"
    assert step.run.attention.impl == "cudnn"


def test_one_fused_attention_forward_per_layer_under_save_named(best_fused_h100):
    """remat=save_named keeps cuDNN's output and softmax statistics: the backward pass does not
    run the fused forward again (remat=save_dots does: two per layer)."""
    step, report = best_fused_h100
    attention: dict[str, int] = {}
    for k in report["kernels"]:
        if k["kind"] == "attention":
            attention[k["detail"]] = attention.get(k["detail"], 0) + k["count"]
    n_layer = step.run.config.model.n_layer
    assert attention == {"__cudnn$fmhaSoftmax": n_layer, "__cudnn$fmhaSoftmaxBackward": n_layer}


def test_the_stash_holds_one_copy_of_each_activation(best_fused_h100):
    """The forward layer loop's saved activations under save_named: q, k, v, the attention
    output and statistics, the residual stream twice (block input and after attention) and the
    two MLP input projections, and no buffer written from the same value as another."""
    step, report = best_fused_h100
    activations = [b for b in report["stash"] if b["kind"] == "activation"]
    assert [b for b in activations if b["duplicate_of"]] == []
    c = step.run.config
    b, t, n = c.data.batch_size, c.model.sequence_length, c.model.n_layer
    tokens_bytes = n * b * t
    expected = (3 * c.model.n_embd * 2  # q, k, v (bf16)
                + c.model.n_embd * 2  # the attention output (bf16)
                + c.model.n_head * 4  # softmax statistics (f32, per head and position)
                + 2 * c.model.n_embd * 4  # the residual stream, twice (f32)
                + 2 * c.model.mlp_hidden * 2)  # w1 x and w2 x (bf16)
    assert report["stash_bytes"] == tokens_bytes * expected


def test_the_json_report_is_the_compiled_memory_analysis(tmp_path, capsys):
    """The command's JSON carries XLA's own memory analysis, byte for byte."""
    from minillm_jax.experiments import gpu_aot

    out = tmp_path / "r.json"
    overrides = ["--config.n_layer=2", "--config.batch_size=4", "--config.sequence_length=128"]
    assert gpu_aot.main(["--config", str(REPO / "configs/best_fused.py"), "--target", "a100-40",
                         "--json", str(out), *overrides]) == 0
    report = json.loads(out.read_text())
    assert "Predicted step" in capsys.readouterr().out
    config = _config("best_fused", n_layer=2, batch_size=4, sequence_length=128)
    mem = targets.compile_train_step(config, targets.load_target("a100-40")).compiled \
        .memory_analysis()
    assert (report["argument_bytes"], report["output_bytes"], report["alias_bytes"],
            report["temp_bytes"]) == (mem.argument_size_in_bytes, mem.output_size_in_bytes,
                                      mem.alias_size_in_bytes, mem.temp_size_in_bytes)
    assert report["target"] == "a100-40" and report["device_kind"] == "NVIDIA A100-SXM4-40GB"
    assert report["fits"] is True and 0 < report["predicted_mfu"] < 1
    assert report["predicted_tokens_per_s"] == pytest.approx(
        report["tokens_per_step"] / report["predicted_step_s"])


def _small_target(tmp_path, memory_bytes: int) -> str:
    text = targets.load_target("h100").text
    text = re.sub(r"device_memory_size: \d+", f"device_memory_size: {memory_bytes}", text)
    path = tmp_path / "small.txtpb"
    path.write_text(text)
    return str(path)


def _tiny(**overrides):
    from minillm_jax.config import build_config

    config = tiny_config(compute_dtype="auto", compilation_cache="off", **overrides)
    return build_config(config, "tiny")


def test_max_batch_fits_and_one_more_does_not(tmp_path, monkeypatch):
    """--max-batch on a GPU with little memory: the batch it returns fits JAX's share of the
    card, and that batch + 1 does not (each checked by compiling it again here)."""
    from minillm_jax.experiments import gpu_aot
    from minillm_jax.experiments.aot.report import memory

    monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION", raising=False)
    path = _small_target(tmp_path, 700 * 2**20)  # 499 MiB usable: about 24 sequences of 64
    target = targets.load_target(config_file=path)
    out = tmp_path / "max.json"
    config_file = tmp_path / "tiny.py"
    config_file.write_text(
        "from tests.conftest import tiny_config\n\ndef get_config():\n"
        "    return tiny_config(compute_dtype='auto', sequence_length=64)\n")
    monkeypatch.syspath_prepend(str(REPO))
    assert gpu_aot.main(["--config", str(config_file), "--target-config", path, "--max-batch",
                         "--json", str(out)]) == 0
    best = json.loads(out.read_text())["max_batch"]
    assert best > 8  # more than the configured batch: it searched upward

    def total(batch):
        step = targets.compile_train_step(_tiny(batch_size=batch, sequence_length=64), target)
        return memory(step.compiled)["total_bytes"]

    assert total(best) <= target.usable_bytes < total(best + 1)


def test_largest_fitting_bisects_to_the_boundary():
    from minillm_jax.experiments.gpu_aot import largest_fitting

    probes = []

    def fits(batch):
        probes.append(batch)
        return batch <= 37

    assert largest_fitting(fits, 1, 8) == 37
    assert len(probes) <= 12
    assert largest_fitting(lambda b: b <= 36, 4, 8) == 36  # multiples of the data-parallel size
    assert largest_fitting(lambda b: False, 2, 8) is None


def test_eight_gpu_fsdp_shards_the_state(tmp_path):
    """An 8-GPU node with FSDP over all 8: each device holds about 1/8 of the parameters and
    optimizer state, and the step gathers and reduces them."""
    from minillm_jax.experiments.aot.report import analyse

    target = targets.load_target("h100")
    one = targets.compile_train_step(_tiny(batch_size=8, attention_impl="xla"), target, 1)
    eight = targets.compile_train_step(
        _tiny(batch_size=8, attention_impl="xla", mesh_fsdp=8, mesh_data=1), target, 8)
    ratio = eight.compiled.memory_analysis().argument_size_in_bytes / \
        one.compiled.memory_analysis().argument_size_in_bytes
    assert 0.12 < ratio < 0.14, ratio  # 1/8 = 0.125, plus the replicated batch, step and key
    report = analyse(eight, target, 8, "tiny")
    assert report["mesh"] == {"data": 1, "fsdp": 8}
    assert {"all-gather", "reduce-scatter"} <= set(report["collectives"]) or \
        {"all-gather", "all-reduce"} <= set(report["collectives"]), report["collectives"]


def test_no_cuda_plugin_is_one_line(monkeypatch, capsys):
    from minillm_jax.experiments import gpu_aot

    monkeypatch.setattr(targets, "cuda_plugin_missing", lambda: True)
    assert gpu_aot.main(["--config", str(REPO / "configs/best_fused.py")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cuda12" in err and err.startswith("error:")


def test_unknown_target_is_one_line(capsys):
    from minillm_jax.experiments import gpu_aot

    assert gpu_aot.main(["--config", str(REPO / "configs/best_fused.py"),
                         "--target", "v100"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "a100-40" in err and "h100" in err


def test_gpu_check_calibration_predicts_the_compiled_program():
    """gpu_check's child predicts the very program it times (predict_compiled on its HLO): the
    same number the command gives for that program, and none for a GPU with no target."""
    from minillm_jax.experiments.aot.report import analyse, predict_compiled

    target = targets.load_target("h100")
    step = targets.compile_train_step(_tiny(batch_size=8), target)
    report = analyse(step, target, 1, "tiny")
    predicted = predict_compiled(step.compiled.as_text(), target.device_kind,
                                 report["tokens_per_step"], report["flops_per_token"])
    assert predicted["predicted_step_ms"] == pytest.approx(1e3 * report["predicted_step_s"])
    assert predicted["predicted_mfu"] == pytest.approx(report["predicted_mfu"])
    assert predict_compiled(step.compiled.as_text(), "NVIDIA GeForce GTX 1080", 1, 1.0) is None


def test_gpu_check_report_shows_prediction_beside_measurement():
    from minillm_jax.experiments.gpu_check import markdown

    cell = {"name": "best_fused.py as configured",
            "result": {"status": "ok", "step_ms": 120.0, "predicted_step_ms": 96.0,
                       "measured_over_predicted": 1.25, "tokens_per_s": 1.0, "compile_s": 1.0}}
    text = markdown({"environment": {"device": "NVIDIA H100 80GB HBM3", "devices": 1,
                                     "platform": "gpu"}, "cells": [cell]})
    assert "| 120.0 | 96.0 (1.25x) |" in text


def test_muon_newton_schulz_gemms_are_in_the_kernel_list():
    """modern.py's Muon orthogonalises each matrix's update with Newton-Schulz iterations: bf16
    GEMMs of the optimizer, outside the layer loops, listed with the step's kernels."""
    from minillm_jax.experiments.aot.report import analyse

    target = targets.load_target("h100")
    step = targets.compile_train_step(_config("modern", n_layer=2, batch_size=2,
                                              sequence_length=128), target)
    report = analyse(step, target, 1, "modern")
    optimizer = [k for k in report["kernels"]
                 if k["kind"] == "gemm" and k["region"] == "optimizer and rest"]
    assert len(optimizer) >= 3 * 5  # a few products per iteration, 5 iterations
    assert all(k["operand_dtypes"] == ["bf16", "bf16"] for k in optimizer)
    without_muon = analyse(targets.compile_train_step(_config(
        "modern", n_layer=2, batch_size=2, sequence_length=128, opt="adamw"), target),
        target, 1, "modern")
    assert not [k for k in without_muon["kernels"]
                if k["kind"] == "gemm" and k["region"] == "optimizer and rest"]
