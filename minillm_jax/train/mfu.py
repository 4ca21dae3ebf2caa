"""FLOPs per token, device peaks and MFU: the one accounting that benchmark, gpu_check, the
trainer's log and the planner share.

Training FLOPs per token (forward + backward = 3 x forward):

    flops_per_token = 6 * N_matmul + 6 * n_layer * d_attn * T

N_matmul counts the weights that take part in a matrix multiplication for one token:
  * every dense kernel (attention q/k/v and output projections, MLP, MoE router);
  * MoE expert kernels scaled by top_k / n_experts (the experts one token uses);
  * the output head: the tied embedding matrix, or the untied lm_head kernel.
Not counted: an untied input embedding and GPT's position table (row gathers, not matmuls),
norm scales, biases and DenseFormer's residual weights (elementwise work).

Attention: per layer and token the forward pass computes QK^T (2 * T * d_attn FLOPs) and the
weighted sum of values (2 * T * d_attn) over a context of T. A causal mask leaves half of that as
useful work, and fused kernels skip the masked half, so it is counted as half: 2 * T * d_attn
forward, 6 * T * d_attn for training (llm.c's gpt2_estimate_mfu and MaxText count causal
attention the same way). d_attn = n_head * head_dim. Recomputation (remat) is not counted: this
is model FLOPs utilisation, not hardware FLOPs.

MFU = tokens/s (all devices) x flops_per_token / (peak per device x device count). Peaks are the
dense (no 2:4 sparsity) bf16 tensor-core FLOP/s of the vendor datasheets, looked up by the exact
`device.device_kind` string JAX reports (on NVIDIA GPUs the CUDA device name, as nvidia-smi prints
it; XLA's se_gpu_pjrt_client names devices by DeviceDescription::name()). A device not in the
table gets no MFU ("MFU n/a") rather than a guess from a substring: "NVIDIA L40S" contains "L4",
and H100 PCIe/NVL are slower than the SXM part whose name also contains "H100".
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

# Dense bf16 peak FLOP/s per device by the exact device_kind JAX reports. Sources:
#   strings: llm.c llmc/mfu.h gpu_db (A100-PCIE-40GB, A100-SXM4-40/80GB, H100 PCIe, H100 80GB
#     HBM3 = SXM5), nvidia-smi names (A100 80GB PCIe, H100 NVL, H200, H200 NVL, L40S, L4, A10);
#     TPUs: jax tests/pallas/tpu_info_test.py and XLA xla/python/ifrt/ir/utils.cc
#     ("TPU v4", "TPU v5 lite" = v5e, "TPU v5" = v5p, "TPU v6 lite" = v6e).
#   peaks: NVIDIA A100 datasheet (312 TF bf16), H100 datasheet (SXM 989, PCIe 756, NVL 835:
#     half the "with sparsity" 1979 / 1513 / 1671), H200 datasheet (SXM 989, NVL 835), L40S
#     datasheet (362 dense, 733 sparse), L4 datasheet (121 dense, 242 sparse), A10 (125);
#     Google Cloud TPU system architecture pages (v4 275, v5e 197, v5p 459, v6e 918).
DEVICE_PEAKS: dict[str, float] = {
    "NVIDIA A100-SXM4-40GB": 312e12,
    "NVIDIA A100-SXM4-80GB": 312e12,
    "NVIDIA A100-PCIE-40GB": 312e12,
    "NVIDIA A100-PCIE-80GB": 312e12,  # as llm.c lists it
    "NVIDIA A100 80GB PCIe": 312e12,  # as nvidia-smi prints it
    "NVIDIA H100 80GB HBM3": 989e12,  # SXM5
    "NVIDIA H100 PCIe": 756e12,
    "NVIDIA H100 NVL": 835e12,
    "NVIDIA H200": 989e12,  # SXM
    "NVIDIA H200 NVL": 835e12,
    "NVIDIA L40S": 362e12,
    "NVIDIA L4": 121e12,
    "NVIDIA A10": 125e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5": 459e12,
    "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
}

# Short names for the planner's --accelerator (each one a device kind above).
ACCELERATORS: dict[str, str] = {
    "a100": "NVIDIA A100-SXM4-80GB",
    "h100": "NVIDIA H100 80GB HBM3",
    "h100 pcie": "NVIDIA H100 PCIe",
    "h100 nvl": "NVIDIA H100 NVL",
    "h200": "NVIDIA H200",
    "h200 nvl": "NVIDIA H200 NVL",
    "l40s": "NVIDIA L40S",
    "l4": "NVIDIA L4",
    "a10": "NVIDIA A10",
    "tpu v4": "TPU v4",
    "tpu v5e": "TPU v5 lite",
    "tpu v5 lite": "TPU v5 lite",
    "tpu v5p": "TPU v5",
    "tpu v6e": "TPU v6 lite",
    "tpu v6 lite": "TPU v6 lite",
}


def peak_for_kind(device_kind: str) -> float | None:
    """Dense bf16 peak FLOP/s of one device of this exact kind, or None when unknown."""
    return DEVICE_PEAKS.get(device_kind)


@dataclasses.dataclass(frozen=True)
class Peak:
    """Peak FLOP/s of one device (None: unknown, no MFU) and where the number comes from."""

    flops: float | None
    source: str


def device_peak(device: Any = None) -> Peak:
    """The datasheet peak of `device` (default: the first device), exact device-kind match."""
    if device is None:
        import jax

        device = jax.devices()[0]
    peak = peak_for_kind(device.device_kind)
    if peak is None:
        return Peak(None, f"no datasheet peak for device kind {device.device_kind!r}")
    return Peak(peak, f"{device.device_kind} datasheet bf16 dense")


def flops_per_token(matmul_params: float, n_layer: int, d_attn: int, seq_len: int) -> float:
    """Training FLOPs per token: 6 N_matmul + causal attention (half of 12 L d_attn T)."""
    return 6.0 * matmul_params + 6.0 * n_layer * d_attn * seq_len


def _path_names(path: tuple) -> list[str]:
    return [str(getattr(k, "key", getattr(k, "name", k))) for k in path]


def matmul_params(params: Any, cfg: Any) -> float:
    """Weights one token multiplies through (module docstring): dense kernels, experts scaled by
    top_k / n_experts, and the output head (tied embedding or lm_head)."""
    import jax

    moe_names = {name for kind, name in cfg.sublayers if kind == "moe"} if cfg.has_moe else set()
    total = 0.0
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        names = _path_names(path)
        size = math.prod(leaf.shape)
        if names[-1] == "kernel":
            expert = (len(names) >= 3 and names[0] == "blocks" and names[1] in moe_names
                      and names[2] != "router")
            total += size * cfg.moe_top_k / cfg.moe_n_experts if expert else size
        elif names == ["wte", "embedding"] and cfg.tie_embeddings:
            total += size  # the tied output head
    return total


def model_flops_per_token(params: Any, cfg: Any) -> float:
    """Training FLOPs per token of a model (a ModelConfig and its parameters or their shapes)."""
    return flops_per_token(matmul_params(params, cfg), cfg.n_layer, cfg.n_head * cfg.head_dim,
                           cfg.sequence_length)


def mfu(tokens_per_s: float, flops_per_token: float, peak_per_device: float | None,
        devices: int) -> float | None:
    """Model FLOPs utilisation: achieved FLOP/s over all devices / (peak x devices)."""
    if peak_per_device is None or peak_per_device <= 0:
        return None
    return tokens_per_s * flops_per_token / (peak_per_device * devices)


def describe(value: float | None, device_kind: str) -> str:
    """'MFU 37.2%', or 'MFU n/a (no peak known for <kind>)'."""
    if value is None:
        return f"MFU n/a (no peak known for {device_kind!r})"
    return f"MFU {100 * value:.1f}%"
