"""Compute-budget planner: budget, Chinchilla allocations, parameter counts, proposals, CLI."""

import math
import textwrap

import pytest

from minillm_jax.experiments import planner
from minillm_jax.train.mfu import flops_per_token

A100_3H = 312e12 * 3 * 3600  # 3.3696e18 FLOPs at 100% MFU


def test_budget_a100_three_hours():
    assert planner.peak_for("A100") == 312e12
    assert planner.compute_budget(312e12, 3) == pytest.approx(3.3696e18, rel=1e-12)
    assert planner.compute_budget(planner.peak_for("a100"), 3, mfu=0.29) == pytest.approx(
        0.29 * 3.3696e18, rel=1e-12)
    assert planner.compute_budget(1e12, 2, mfu=0.5, devices=8) == pytest.approx(
        1e12 * 8 * 7200 * 0.5)
    for name, key in (("tpu-v5p", "tpu v5p"), ("TPU_v4", "tpu v4"), ("v5e", "tpu v5e"),
                      ("tpuv4", "tpu v4"), ("H200", "h200"), ("h100", "h100")):
        assert planner.normalise_accelerator(name) == key
    with pytest.raises(planner.PlanError, match="unknown accelerator"):
        planner.peak_for("a1000")
    with pytest.raises(planner.PlanError, match="MFU"):
        planner.compute_budget(312e12, 3, mfu=29)


def test_chinchilla_twenty_tokens_per_parameter():
    n, d = planner.chinchilla_20(A100_3H)
    assert n == pytest.approx(math.sqrt(A100_3H / 120), rel=1e-12)
    assert d == pytest.approx(20 * n, rel=1e-12)
    assert 6 * n * d == pytest.approx(A100_3H, rel=1e-12)
    # The seed's arithmetic: ~170M parameters, ~3.4B tokens.
    assert n == pytest.approx(167.57e6, rel=1e-3)
    assert d == pytest.approx(3.3514e9, rel=1e-3)


def test_parametric_fit_optimum_and_loss():
    alpha, beta, a, b, e = 0.34, 0.28, 406.4, 410.7, 1.69
    g = (alpha * a / (beta * b)) ** (1 / (alpha + beta))
    n_hand = g * (A100_3H / 6) ** (beta / (alpha + beta))
    d_hand = (A100_3H / 6) ** (alpha / (alpha + beta)) / g
    n, d = planner.fit_optimum(A100_3H)
    assert n == pytest.approx(n_hand, rel=1e-12) and d == pytest.approx(d_hand, rel=1e-12)
    assert 6 * n * d == pytest.approx(A100_3H, rel=1e-12)
    assert n == pytest.approx(139.5e6, rel=2e-3)  # worked by hand: G = 1.3447
    # The closed form is the minimum of L(N, C/6N): check on a fine log grid.
    grid = [1e7 * 10 ** (i / 2000) for i in range(6001)]
    best = min(grid, key=lambda x: planner.predicted_loss(x, A100_3H / (6 * x)))
    assert best == pytest.approx(n, rel=2e-3)
    assert planner.predicted_loss(1e8, 2e9) == pytest.approx(
        e + a / 1e8 ** alpha + b / 2e9 ** beta, rel=1e-12)


def test_param_counts_match_llm_baselines():
    # docs/llm-baselines.md#sources-and-versions: the winner's tied llama-18L is 166,063,872; the organizers' GPT-24L 208,540,416.
    assert planner.param_count(18, 768, 12, model="llama") == 166_063_872
    assert planner.param_count(24, 768, 12, model="gpt") == 208_540_416
    c, v = 512, 50304  # GPT: per layer 12 C^2 + 2 C (two norms), plus ln_f and the V x C embedding
    assert planner.param_count(3, c, model="gpt") == 3 * (12 * c * c + 2 * c) + c + v * c
    # The linear decomposition equals num_params of the whole model's abstract shapes.
    from minillm_jax.model.transformer import ModelConfig, abstract_params, build_model, num_params

    cfg = ModelConfig(model="llama", n_layer=5, n_embd=640, n_head=10)
    assert planner.param_count(5, 640) == num_params(abstract_params(build_model(cfg)), cfg)


def test_proposals_for_a100_three_hours():
    proposals = planner.propose(A100_3H, batch_size=64, sequence_length=512)
    n_opt = planner.fit_optimum(A100_3H)[0]
    best_possible = planner.predicted_loss(*planner.fit_optimum(A100_3H))
    assert len(proposals) == 5
    assert [p.loss for p in proposals] == sorted(p.loss for p in proposals)
    for p in proposals:
        assert p.n_embd == 64 * p.n_head
        assert 32 <= p.n_embd / p.n_layer <= 96
        assert n_opt / 2 < p.params < 2 * n_opt
        assert p.params == planner.param_count(p.n_layer, p.n_embd, p.n_head)
        assert p.flops_per_token == flops_per_token(p.params, p.n_layer, p.n_embd, 512)
        assert p.tokens == pytest.approx(A100_3H / p.flops_per_token)
        assert p.iterations == math.ceil(p.tokens / (64 * 512))
        assert p.loss == pytest.approx(planner.predicted_loss(p.params, p.tokens))
        assert p.loss >= best_possible  # attention FLOPs make every real shape a bit worse


def test_cli_reproduces_the_seed_arithmetic(capsys):
    assert planner.main(["--accelerator", "a100", "--hours", "3"]) == 0
    out = capsys.readouterr().out
    assert "= 3.37e+18 FLOPs at 100% MFU" in out
    assert "N = 167.6M parameters, D = 3.351B tokens" in out
    assert "N = 139.5M parameters, D = 4.027B tokens" in out
    assert "   29%    9.77e+17" in out and "   55%    1.85e+18" in out
    assert "--config.n_layer=" in out
    assert planner.main(["--accelerator", "a100", "--hours", "3", "--mfu", "0.55"]) == 0
    out = capsys.readouterr().out
    assert "55%    1.85e+18" in out and "<- chosen (a good trainer)" in out
    assert "Proposed llama configs at 55% MFU (C = 1.85e+18 FLOPs)" in out
    for bad in (["--accelerator", "a1000", "--hours", "3"], ["--hours", "3"],
                ["--accelerator", "a100", "--hours", "3", "--mfu", "1.5"]):
        with pytest.raises(SystemExit):
            planner.main(bad)


def test_cli_measure_runs_the_benchmark(tmp_path, capsys, monkeypatch):
    from minillm_jax.experiments import benchmark

    # The CPU "peak" is a timed matmul; a small one keeps this test quick.
    original = benchmark.measure_matmul_peak
    monkeypatch.setattr(benchmark, "measure_matmul_peak",
                        lambda dtype=None: original(n=256, repeats=2, dtype=dtype))
    config = tmp_path / "tiny.py"
    config.write_text(textwrap.dedent("""
        from tests.conftest import tiny_config

        def get_config():
            return tiny_config(batch_size=2, sequence_length=16, acc_steps=1)
    """))
    assert planner.main(["--accelerator", "a100", "--hours", "3", "--measure", str(config),
                         "--measure-steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "measured " + str(config) in out and "MFU" in out
    assert "note: MFU was measured on CPU" in out
    assert "<- measured:" in out


# ---------------------------------------------------------------------------------------------
# --measure-aot: the budget from a config's predicted throughput on a GPU target

TINY_CONFIG = """
from tests.conftest import tiny_config

def get_config():
    return tiny_config(batch_size=2, sequence_length=16, acc_steps=1)
"""


def _tiny_config_file(tmp_path):
    path = tmp_path / "tiny.py"
    path.write_text(TINY_CONFIG)
    return str(path)


def _fake_report(mfu=0.375, fits=True):
    """What report.analyse() returns, as far as the planner reads it (one H100)."""
    fpt = 1.0e9
    return {"predicted_mfu": mfu, "predicted_tokens_per_s": mfu * 989e12 / fpt,
            "flops_per_token": fpt, "fits": fits, "total_bytes": 70 * 2**30 if not fits else 2**30,
            "usable_bytes": int(0.75 * 79.6 * 2**30)}


@pytest.fixture
def fake_compile(monkeypatch):
    """planner_aot's compile replaced by a fixed prediction, the CUDA plugin taken as present."""
    from minillm_jax.experiments import planner_aot
    from minillm_jax.experiments.aot import targets

    calls, state = [], {"report": _fake_report()}
    monkeypatch.setattr(targets, "cuda_plugin_missing", lambda: False)
    monkeypatch.setattr(targets, "compile_on_host", lambda: None)

    def compile_report(config_path, target, devices):
        calls.append((config_path, target.name, devices))
        return state["report"]

    monkeypatch.setattr(planner_aot, "compile_report", compile_report)
    state["calls"] = calls
    return state


def test_measure_aot_budget_is_the_predicted_mfu(tmp_path, capsys, fake_compile):
    config = _tiny_config_file(tmp_path)
    assert planner.main(["--hours", "3", "--devices", "2", "--measure-aot", config,
                         "--target", "h100"]) == 0
    out = capsys.readouterr().out
    assert fake_compile["calls"] == [(config, "h100", 2)]
    c = 989e12 * 2 * 3 * 3600 * 0.375  # the H100 SXM peak (mfu.DEVICE_PEAKS) x MFU
    assert f"= {c:.6g} FLOPs" in out
    assert f"Proposed llama configs at 38% MFU (C = {c:.3g} FLOPs)" in out
    assert "Budget: 3 h x 2 x NVIDIA H100 80GB HBM3 (h100) at 989 TFLOP/s peak" in out
    assert "predicted, not measured" in out and "roofline" in out and config in out
    assert "MFU 37.50% of 989 TFLOP/s" in out and "370,875 tokens/s" in out
    assert "Memory: the step fits" in out
    assert "<- predicted: tiny.py on h100, 370,875 tok/s" in out
    # --accelerator naming the same GPU is accepted (a100 covers both A100 memory sizes)
    from minillm_jax.experiments import planner_aot

    for accelerator, target in (("h100", "h100"), ("a100", "a100-40"), ("A100", "a100-80"),
                                ("h200", "h200"), ("L4", "l4")):
        key = planner.normalise_accelerator(accelerator)
        assert planner_aot.resolve_target(target, accelerator=key).name == target


def _one_error_line(capsys, argv, status=2):
    assert planner.main(argv) == status
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Budget:" not in captured.out
    return lines[0]


def test_measure_aot_rejections_are_one_line(tmp_path, capsys, fake_compile, monkeypatch):
    from minillm_jax.experiments.aot import targets

    config = _tiny_config_file(tmp_path)
    aot = ["--hours", "3", "--measure-aot", config]
    line = _one_error_line(capsys, aot + ["--target", "h300"])
    assert "unknown GPU target 'h300'" in line and "a100-40, a100-80, h100, h200, l4" in line
    line = _one_error_line(capsys, aot)
    assert "--measure-aot needs --target" in line
    line = _one_error_line(capsys, aot + ["--target", "a100-40", "--accelerator", "h100"])
    assert "disagree" in line and "NVIDIA A100-SXM4-40GB" in line
    line = _one_error_line(capsys, aot + ["--target", "h200", "--accelerator", "h100"])
    assert "disagree" in line  # the same peak, a different GPU
    line = _one_error_line(capsys, aot + ["--target", "h100", "--peak-tflops", "500"])
    assert "drop --peak-tflops" in line
    line = _one_error_line(capsys, ["--hours", "3", "--measure-aot", str(tmp_path / "nope.py"),
                                    "--target", "h100"])
    assert "no such config file" in line
    fake_compile["report"] = _fake_report(fits=False)
    line = _one_error_line(capsys, aot + ["--target", "h100"], status=1)
    assert "does not fit 1 x NVIDIA H100 80GB HBM3 (h100)" in line and "--max-batch" in line
    monkeypatch.setattr(targets, "cuda_plugin_missing", lambda: True)
    line = _one_error_line(capsys, aot + ["--target", "h100"])
    assert line == f"error: {targets.PLUGIN_HINT}"
    assert len(fake_compile["calls"]) == 1  # only the run that got as far as compiling
    for exclusive in (["--mfu", "0.4"], ["--measure", config]):
        with pytest.raises(SystemExit):
            planner.main(aot + ["--target", "h100"] + exclusive)
    with pytest.raises(SystemExit):
        planner.main(["--hours", "3", "--accelerator", "h100", "--target", "h100"])


AOT_CHECK = """
import contextlib, io, json, sys
from minillm_jax.config import build_config, load_config
from minillm_jax.experiments import planner
from minillm_jax.experiments.aot import report, targets

config_path = sys.argv[1]
target = targets.load_target("h100")
config = load_config(config_path)
config.compilation_cache = "off"
step = targets.compile_train_step(build_config(config, "tiny"), target, 1)
r = report.analyse(step, target, 1, "tiny")
out = io.StringIO()
with contextlib.redirect_stdout(out):
    status = planner.main(["--hours", "3", "--measure-aot", config_path, "--target", "h100"])
print(json.dumps({"status": status, "out": out.getvalue(), "mfu": r["predicted_mfu"],
                  "tokens_per_s": r["predicted_tokens_per_s"], "fits": r["fits"]}))
"""


def test_measure_aot_compiles_for_the_target(tmp_path):
    """A real compile of a tiny config for an H100 (no GPU): the planner's budget is the one the
    gpu_aot report's predicted MFU gives, computed here from report.analyse itself."""
    from minillm_jax.experiments.aot import targets

    if targets.cuda_plugin_missing():
        pytest.skip("JAX's CUDA plugin is not installed (pip install -e '.[cuda12]')")
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    # A fresh process: the CUDA plugin registers for compile-only use only if JAX starts on CPU.
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", AOT_CHECK, _tiny_config_file(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    out = result["out"]
    assert result["status"] == 0 and result["fits"] and 0 < result["mfu"] < 1
    c = 989e12 * 3 * 3600 * result["mfu"]
    assert f"= {c:.6g} FLOPs" in out
    assert f"(C = {c:.3g} FLOPs)" in out
    assert f"{result['tokens_per_s']:,.0f} tokens/s" in out
    assert "predicted, not measured" in out and "Memory: the step fits" in out
