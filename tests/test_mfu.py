"""MFU accounting (minillm_jax/train/mfu.py): FLOPs per token by hand, the device-kind table, devices."""

import types

import numpy as np
import pytest

from minillm_jax.train import mfu
from minillm_jax.model.transformer import ModelConfig, abstract_params, build_model

L, C, NH, T, V = 2, 64, 4, 32, 256


def _model(**kw):
    cfg = ModelConfig(n_layer=L, n_embd=C, n_head=NH, vocab_size=V, sequence_length=T, **kw)
    return cfg, abstract_params(build_model(cfg))


def test_llama_flops_tied_and_untied_by_hand():
    tied_cfg, tied = _model(model="llama", tie_embeddings=True)
    untied_cfg, untied = _model(model="llama", tie_embeddings=False)
    hidden = tied["blocks"]["mlp"]["w1"]["kernel"].shape[-1]  # the SwiGLU width, from the shapes
    # per layer: q,k,v (C x 3C) + output (C x C) + w1, w2 (C x H) + c_proj (H x C); one V x C head
    n = L * (4 * C * C + 3 * C * hidden) + V * C
    attention = 6 * L * C * T  # QK^T and AV, 4 T C forward per layer, half of it causal, x3
    assert mfu.matmul_params(tied, tied_cfg) == n
    # untied: the input embedding is a gather (no FLOPs); the lm_head replaces the tied head
    assert mfu.matmul_params(untied, untied_cfg) == n
    assert mfu.model_flops_per_token(tied, tied_cfg) == 6 * n + attention
    assert mfu.model_flops_per_token(untied, untied_cfg) == 6 * n + attention
    # the old accounting (all parameters) overcounted the untied model by V x C
    total_untied = sum(int(np.prod(x.shape)) for x in
                       __import__("jax").tree.leaves(untied))
    assert total_untied - mfu.matmul_params(untied, untied_cfg) >= V * C


def test_gpt_excludes_position_table_and_moe_counts_active_experts():
    cfg, params = _model(model="gpt", tie_embeddings=True, bias=False)
    assert mfu.matmul_params(params, cfg) == L * 12 * C * C + V * C  # wpe (T x C) is a gather
    moe_cfg, moe = _model(model="llama", tie_embeddings=True, block_pattern="attn,moe",
                          moe_n_experts=4, moe_top_k=2, moe_hidden=96)
    expert = 3 * C * 96  # w1, w2, c_proj of one expert
    per_layer = 4 * C * C + C * 4 + 2 * expert  # attention, router (C x E), top-2 experts
    assert mfu.matmul_params(moe, moe_cfg) == L * per_layer + V * C


def test_mfu_totals_over_devices():
    one = mfu.mfu(tokens_per_s=1e5, flops_per_token=1e9, peak_per_device=312e12, devices=1)
    assert one == pytest.approx(1e14 / 312e12, rel=1e-12)
    # 8 devices at the same per-device speed: 8x the tokens over 8x the peak, the same MFU
    assert mfu.mfu(8e5, 1e9, 312e12, 8) == pytest.approx(one, rel=1e-12)
    assert mfu.mfu(1e5, 1e9, 312e12, 8) == pytest.approx(one / 8, rel=1e-12)
    assert mfu.mfu(1e5, 1e9, None, 1) is None
    assert mfu.describe(0.3712, "NVIDIA H100 80GB HBM3") == "MFU 37.1%"


def test_device_kind_table_matches_exactly():
    peaks = mfu.DEVICE_PEAKS
    assert peaks["NVIDIA L40S"] == 362e12 and peaks["NVIDIA L4"] == 121e12
    assert mfu.peak_for_kind("NVIDIA L40S") != mfu.peak_for_kind("NVIDIA L4")
    assert mfu.peak_for_kind("NVIDIA H100 PCIe") == 756e12
    assert mfu.peak_for_kind("NVIDIA H100 80GB HBM3") == 989e12  # SXM
    assert mfu.peak_for_kind("NVIDIA H100 NVL") == 835e12
    assert mfu.peak_for_kind("NVIDIA H200") == 989e12
    assert mfu.peak_for_kind("NVIDIA H200 NVL") == 835e12
    for kind in ("NVIDIA A100-SXM4-40GB", "NVIDIA A100-SXM4-80GB", "NVIDIA A100-PCIE-40GB",
                 "NVIDIA A100 80GB PCIe"):
        assert mfu.peak_for_kind(kind) == 312e12
    assert mfu.peak_for_kind("TPU v5 lite") == 197e12 and mfu.peak_for_kind("TPU v5") == 459e12
    assert mfu.peak_for_kind("TPU v4") == 275e12 and mfu.peak_for_kind("TPU v6 lite") == 918e12
    # no substring or case guessing
    for kind in ("NVIDIA L4 ", "nvidia l4", "L4", "NVIDIA H100", "NVIDIA H100 80GB",
                 "NVIDIA GeForce RTX 4090", "TPU v5 lite pod", "cpu"):
        assert mfu.peak_for_kind(kind) is None, kind
    for short, kind in mfu.ACCELERATORS.items():
        assert kind in peaks, short


def test_unknown_device_says_mfu_na_with_its_name():
    device = types.SimpleNamespace(device_kind="NVIDIA GeForce RTX 4090", platform="gpu")
    peak = mfu.device_peak(device)
    assert peak.flops is None and "NVIDIA GeForce RTX 4090" in peak.source
    assert mfu.describe(None, device.device_kind) == \
        "MFU n/a (no peak known for 'NVIDIA GeForce RTX 4090')"
    known = mfu.device_peak(types.SimpleNamespace(device_kind="NVIDIA L40S", platform="gpu"))
    assert known.flops == 362e12


class _Writer:
    def __init__(self):
        self.records = []

    def write(self, step, **values):
        self.records.append((step, values))


def test_progress_log_reports_the_same_mfu(capsys, monkeypatch):
    from minillm_jax.train import progress

    clock = iter([0.0, 2.0, 2.0, 4.0, 4.0])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    metrics = {"loss": np.float32(3.0), "lr": np.float32(1e-3), "grad_norm": np.float32(1.0),
               "skipped": np.float32(0.0)}
    writer = _Writer()
    p = progress.Progress(writer, log_freq=1, tokens_per_step=1000, flops_per_token=1e9,
                          peak=mfu.Peak(1e12, "test"), devices=2)
    p.push(0, metrics, total=5)
    p.flush(total=5)  # one step in 2 s: 500 tok/s x 1e9 FLOP / (1e12 x 2 devices) = 25%
    out = capsys.readouterr().out
    assert "500 tok/s" in out and "MFU 25.0%" in out
    assert writer.records[-1][1]["mfu"] == pytest.approx(0.25)
    unknown = progress.Progress(_Writer(), log_freq=1, tokens_per_step=1000,
                                flops_per_token=1e9, peak=mfu.Peak(None, "no peak"), devices=1)
    unknown.push(0, metrics, total=5)
    unknown.flush(total=5)
    assert "MFU" not in capsys.readouterr().out
