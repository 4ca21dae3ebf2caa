"""What the real configs' steps become on accelerators, checked on a CPU machine.

The train and eval steps are lowered for CUDA (and TPU) without a GPU:
`jax.jit(f).trace(*abstract args).lower(lowering_platforms=(...,))`. The configs keep their
layer structure (depth, width, heads, vocabulary, optimizer); only batch and sequence length are
small, which changes no operation, only shapes. The lowering of cuDNN attention needs JAX's
cuDNN version and compute-capability checks bypassed (they query a GPU; the lowering itself does
not need one), which only tests do, through JAX's private module.
"""

from __future__ import annotations

import re
from collections import Counter

import jax
import jax.numpy as jnp
import pytest

from minillm_jax.train.build import Target, build_run
from minillm_jax.config import build_config, load_config
from tests.conftest import REPO

BATCH, SEQ = 2, 128  # SEQ != head dim 64, so that (B, H, T, T) cannot be mistaken for (B, H, T, D)
DOT = re.compile(r"stablehlo\.dot_general .*: \((tensor<[^>]*>), (tensor<[^>]*>)\) -> "
                 r"(tensor<[^>]*>)")


GPU = "NVIDIA H100 80GB HBM3"


def _run(name: str, cudnn: bool, monkeypatch, **overrides):
    """build_run of configs/<name>.py resolved for an H100 (compute_dtype=auto gives bfloat16,
    dense_weight_grad=auto autodiff's dots, attention_impl=auto cuDNN where it can run) over this
    machine's devices, so that it lowers for CUDA; `cudnn`: the attention it must have chosen."""
    config = load_config(REPO / "configs" / f"{name}.py")
    config.update(dict(batch_size=BATCH, sequence_length=SEQ, compilation_cache="off",
                       **overrides))
    from jax._src.cudnn import fused_attention_stablehlo as cudnn_lowering

    # tracing cuDNN attention asks the local GPU for its cuDNN version and compute capability
    monkeypatch.setattr(cudnn_lowering, "check_cudnn_version", lambda: 91000)
    monkeypatch.setattr(cudnn_lowering, "check_compute_capability", lambda capability: True)
    target = Target(tuple(jax.devices()), live=False, platform_override="gpu",
                    device_kind_override=GPU)
    run = build_run(build_config(config, name), target)
    assert (run.attention.impl == "cudnn") == cudnn, run.attention
    assert run.config.execution.compute_dtype == overrides.get("compute_dtype", "bfloat16")
    assert run.config.execution.dense_weight_grad == "xla"
    return run


def _train_text(run, platform: str = "cuda") -> str:
    horizon = jax.ShapeDtypeStruct((), jnp.int32)
    return run.train_step().trace(run.abstract_state, run.abstract_batch(), horizon).lower(
        lowering_platforms=(platform,)).as_text()


def _eval_text(run, platform: str = "cuda") -> str:
    shape = (run.config.data.eval_batch_size, run.config.model.sequence_length)
    batch = {"x": jax.ShapeDtypeStruct(shape, jnp.int32),
             "y": jax.ShapeDtypeStruct(shape, jnp.int32),
             "mask": jax.ShapeDtypeStruct(shape, jnp.float32)}
    return run.eval_step().trace(run.abstract_state.params, batch).lower(
        lowering_platforms=(platform,)).as_text()


def _dots(text: str) -> list[tuple[str, str, str]]:
    """(lhs, rhs, result) tensor types of every stablehlo.dot_general."""
    lines = [line for line in text.splitlines() if "stablehlo.dot_general" in line]
    dots = [DOT.search(line).groups() for line in lines]
    assert len(dots) == len(lines)  # every dot parsed
    return dots


def _dtype(tensor_type: str) -> str:
    return tensor_type.rstrip(">").split("x")[-1]


def _router_dots(run) -> set[str]:
    """Tensor types of an MoE router's matmuls: tokens (B, T, C) x kernel (C, E) -> logits and
    their gradients."""
    c, e = run.config.model.n_embd, run.config.model.moe_n_experts
    return {f"tensor<{c}x{e}xf32>", f"tensor<{e}x{c}xf32>", f"tensor<{BATCH}x{SEQ}x{e}xf32>"}


@pytest.mark.parametrize("name,cudnn,overrides,float32_dots", [
    # best.py: cuDNN chosen (evaluation), training on the XLA path with attention dropout
    ("best", True, {}, 0),   # XLA attention with dropout (remat), chunked loss, AdamW
    ("best", True, {"loss_chunk_size": 0}, 0),  # the plain loss (model.head_logits)
    ("best_fused", True, {}, 0),   # cuDNN attention
    ("best_fused", False, {"attention_impl": "xla"}, 0),  # XLA attention without dropout
    ("modern", True, {}, 0),  # + Muon (Newton-Schulz), untied head, qk-norm, relu2
    ("modern", True, {"muon_ns_coefficients": "polar_express", "muon_normuon": True,
                      "cautious_weight_decay": True}, 0),  # Muon's options (no extra dots)
    # + modded-nanogpt's value embeddings (their gates) and smear, on a 4-layer modern model
    ("modern", True, {"n_layer": 4, "value_embeddings": 2, "smear": True}, 0),
    # MoE routers stay float32 (Switch Transformer's "selective precision": top-k routing is
    # sensitive to rounding and the (C x E) router costs nothing): logits, and the gradients of
    # the router's input and kernel
    ("moe", True, {}, 3),
])
def test_every_matmul_of_a_bf16_train_step_has_bf16_operands(name, cudnn, overrides,
                                                             float32_dots, monkeypatch):
    """Cross-lowered for CUDA: every dot_general of the train step (forward, backward and
    optimizer) takes two bfloat16 operands, except the ones named above. GPUs run a dot with a
    float32 operand (mixed or not) as a float32 matmul."""
    run = _run(name, cudnn, monkeypatch, **overrides)
    dots = _dots(_train_text(run))
    census = Counter((_dtype(a), _dtype(b)) for a, b, _ in dots)
    not_bf16 = [dot for dot in dots if (_dtype(dot[0]), _dtype(dot[1])) != ("bf16", "bf16")]
    if name == "moe":
        assert all(set(dot) & _router_dots(run) for dot in not_bf16), not_bf16
    assert len(not_bf16) == float32_dots, (census, not_bf16)
    assert census[("bf16", "bf16")] >= 18, census  # the model's matmuls are all there
    if overrides.get("value_embeddings"):  # the smear and value-embedding gates' matmuls
        pairs, x = {(a, b) for a, b, _ in dots}, f"tensor<{BATCH}x{SEQ}x12xbf16>"
        assert {(x, "tensor<12xbf16>"), (x, f"tensor<12x{run.config.model.n_head}xbf16>")} <= pairs
    # float32 accumulation where a float32 result is needed (scores, logits, loss gradients)
    assert any(_dtype(result) == "f32" for a, b, result in dots if _dtype(a) == "bf16")


def test_best_fused_runs_cudnn_attention_in_train_and_eval_steps(monkeypatch):
    """best_fused.py with cuDNN: the fused forward and backward custom calls are in the train
    step, the forward in the eval step, and neither holds a (B, H, T, T) array."""
    run = _run("best_fused", True, monkeypatch)
    b, h, t = BATCH, run.config.model.n_head, SEQ
    scores = f"tensor<{b}x{h}x{t}x{t}x"
    train, evaluate = _train_text(run), _eval_text(run)
    assert _cudnn_calls(train) == {"__cudnn$fmhaSoftmax", "__cudnn$fmhaSoftmaxBackward"}
    assert _cudnn_calls(evaluate) == {"__cudnn$fmhaSoftmax"}
    assert scores not in train and scores not in evaluate
    # the check can fail: best.py's XLA attention (with dropout) holds them
    xla = _run("best", True, monkeypatch)
    assert scores in _train_text(xla) and not _cudnn_calls(_train_text(xla))


def _cudnn_calls(text: str) -> set[str]:
    return set(re.findall(r"custom_call @(__cudnn\$\w+)", text))


def test_best_train_step_lowers_for_tpu(monkeypatch):
    """The TPU-agnostic claim: best.py's step (XLA attention with dropout, whose masks come from
    XLA's RngBitGenerator) lowers for TPU."""
    text = _train_text(_run("best", True, monkeypatch), platform="tpu")
    assert "stablehlo.rng_bit_generator" in text
    assert all(_dtype(a) == _dtype(b) == "bf16" for a, b, _ in _dots(text))


def test_library_uses_no_private_jax_api():
    """jax._src moves between releases; only tests may use it."""
    offenders = [str(path.relative_to(REPO)) for folder in ("minillm_jax", "tools")
                 for path in sorted((REPO / folder).rglob("*.py"))
                 if "jax._src" in path.read_text() or "from jax import _src" in path.read_text()]
    assert offenders == []


def test_float32_attention_kernel_follows_the_platform(monkeypatch):
    """The blocked float32 attention is tuned for XLA:CPU: a float32 run resolved for a GPU
    (gpu_check's float32 reference) takes the plain XLA formulation, a CPU run the blocks."""
    gpu = _run("best_fused", False, monkeypatch, compute_dtype="float32", remat="none")
    assert gpu.attention.impl == "xla"
    cpu = build_run(build_config(load_config(REPO / "configs" / "demo.py"), "demo"))
    assert jax.devices()[0].platform == "cpu" and cpu.attention.impl == "xla_blocks"
    # the plain formulation's (B, H, T, T) float32 scores, one product for all query rows
    assert f"tensor<{BATCH}x{gpu.config.model.n_head}x{SEQ}x{SEQ}xf32>" in _train_text(gpu)


def test_best_on_a_gpu_points_to_best_fused(monkeypatch):
    """best.py where cuDNN could run: one line names best_fused.py; best_fused.py itself and a
    CPU run get none."""
    from minillm_jax.model.attention import fused_config_advice

    best = _run("best", True, monkeypatch)
    advice = fused_config_advice(best.attention, best.config.model.attention_dropout)
    assert advice is not None and "\n" not in advice and "configs/best_fused.py" in advice
    fused = _run("best_fused", True, monkeypatch)
    assert fused_config_advice(fused.attention, fused.config.model.attention_dropout) is None
    cpu = build_run(build_config(load_config(REPO / "configs" / "best.py"), "best"))
    assert fused_config_advice(cpu.attention, cpu.config.model.attention_dropout) is None
