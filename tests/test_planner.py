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
