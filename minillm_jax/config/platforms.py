"""How the "auto" execution fields resolve on a device platform (jax's `Device.platform`: cpu,
gpu, tpu, ...): the matmul dtype and the Dense weight gradient. Used by ExecutionConfig and by
the model's precision helpers, which resolve them for the backend they run on."""

from __future__ import annotations

ACCELERATOR_PLATFORMS = ("gpu", "cuda", "rocm", "tpu")
COMPUTE_DTYPES = ("float32", "bfloat16")
DENSE_WEIGHT_GRADS = ("auto", "xla", "transposed")


def resolve_compute_dtype(requested: str, platform: str) -> tuple[str, str]:
    """(matmul input dtype, why) for config.compute_dtype on a device platform (jax's
    `Device.platform`: cpu, gpu, tpu, ...). auto: bfloat16 on GPUs and TPUs, whose matmul units
    are several times faster in 16 bits (PyTorch autocast's choice too); float32 on CPUs, where
    bfloat16 matmuls are emulated and no faster."""
    if requested != "auto":
        return requested, f"compute_dtype={requested} in the config"
    if platform in ACCELERATOR_PLATFORMS:
        return "bfloat16", (f"auto: bfloat16 matmuls on {platform} (float32 parameters, "
                            "optimizer state, norms, softmax and loss); "
                            "--config.compute_dtype=float32 forces float32")
    return "float32", f"auto: float32 on {platform}, where bfloat16 matmuls are no faster"


def resolve_dense_weight_grad(requested: str, platform: str) -> str:
    """auto: "transposed" (minillm_jax/model/dense.py) on CPUs, autodiff's dots ("xla") on
    accelerators, whose matmul libraries take every operand layout."""
    if requested != "auto":
        return requested
    return "xla" if platform in ACCELERATOR_PLATFORMS else "transposed"
