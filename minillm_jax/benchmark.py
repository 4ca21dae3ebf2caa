"""Throughput and MFU of the compiled train step (the judge of speed; no data loading involved).

FLOPs per token (training, forward + backward) follow PaLM / Chinchilla accounting:

    flops_per_token = 6 * N + 12 * n_layer * n_embd * T

where N is the parameter count that takes part in matmuls (llm-baselines' get_num_params: the tied
embedding counts once, as the output layer; the position table is a lookup and is excluded) and the
second term is attention's QK^T and AV matmuls over a context of T tokens (full, not halved for
causality). For mixture-of-experts models N is the number of *active* parameters per token.

Command line (also tools/bench.py): parameters, FLOPs/token, step time, tokens/s and MFU of a
config's train step on the devices present.

    python -m minillm_jax.benchmark --config configs/demo.py [--config.n_layer=4 ...] [--steps 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import ml_collections

from minillm_jax.cli import parse_config_args, run_command
from minillm_jax.config import ConfigError, TrainConfig, build_config

# Dense bf16 peak FLOP/s per chip (vendor datasheets, no sparsity).
PEAK_FLOPS = {
    "a100": 312e12,
    "h100": 989e12,
    "h200": 989e12,
    "l4": 121e12,
    "a10": 125e12,
    "tpu v4": 275e12,
    "tpu v5 lite": 197e12,
    "tpu v5e": 197e12,
    "tpu v5p": 459e12,
    "tpu v6 lite": 918e12,
}


def flops_per_token(active_params: int, n_layer: int, n_embd: int, seq_len: int) -> float:
    return 6.0 * active_params + 12.0 * n_layer * n_embd * seq_len


def known_peak(device: Any) -> float | None:
    kind = device.device_kind.lower()
    for name, peak in PEAK_FLOPS.items():
        if name in kind:
            return peak
    return None


def measure_matmul_peak(n: int = 2048, repeats: int = 5, dtype: Any = jnp.float32) -> float:
    """Achievable matmul FLOP/s of the default device (used as the CPU 'peak')."""
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    f = jax.jit(lambda a, b: a @ b)
    f(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2.0 * n**3 / best


def peak_flops(compute_dtype: str = "float32") -> tuple[float, str]:
    """(peak FLOP/s per device, where the number comes from)."""
    device = jax.devices()[0]
    peak = known_peak(device) if device.platform != "cpu" else None
    if peak is not None:
        return peak, f"{device.device_kind} datasheet bf16 dense"
    dtype = jnp.bfloat16 if compute_dtype == "bfloat16" else jnp.float32
    source = f"measured {jnp.dtype(dtype).name} matmul on {device.device_kind}"
    return measure_matmul_peak(dtype=dtype), source


def model_flops_per_token(config: TrainConfig, params: Any) -> float:
    """Training FLOPs per token of a run's model (active parameters for MoE)."""
    from minillm_jax.params_info import active_params

    m = config.model
    return flops_per_token(active_params(params, m), m.n_layer, m.n_embd, m.sequence_length)


def benchmark(config: TrainConfig | ml_collections.ConfigDict, steps: int = 5, warmup: int = 2,
              ) -> dict[str, Any]:
    """Compiles the real train step for `config` and times it on random tokens."""
    from minillm_jax.build import build_run
    from minillm_jax.params_info import active_params

    config = build_config(config, "bench")
    run = build_run(config)
    state = run.init_state()
    shape = run.batch_shape
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, min(config.model.vocab_size, 50257),
                          (shape[0], shape[1], shape[2] + 1))
    batch = jax.device_put({"x": tokens[..., :-1].astype(np.int32),
                            "y": tokens[..., 1:].astype(np.int32)}, run.batch_sharding)
    t = time.perf_counter()
    compiled = run.compile_train_step()
    compile_s = time.perf_counter() - t
    horizon = run.horizon(config.run.iterations)
    for _ in range(warmup):
        state, metrics = compiled(state, batch, horizon)
    jax.block_until_ready(state)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        state, metrics = compiled(state, batch, horizon)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t)
    step_time = float(np.median(times))
    params = run.abstract_state.params
    fpt = model_flops_per_token(config, params)
    tokens_per_step = int(np.prod(shape))
    peak, peak_source = peak_flops(config.execution.compute_dtype)
    n_dev = jax.device_count()
    tps = tokens_per_step / step_time
    return {"params": active_params(params, config.model), "flops_per_token": fpt,
            "compile_s": compile_s, "step_time_s": step_time, "tokens_per_s": tps,
            "devices": n_dev, "peak_flops_per_device": peak, "peak_source": peak_source,
            "mfu": tps * fpt / (peak * n_dev), "loss": float(metrics["loss"])}


def train_losses(config: TrainConfig | ml_collections.ConfigDict, steps: int) -> list[float]:
    """Per-step training losses of `config`'s first `steps` steps on its real data (no eval, no
    checkpoints): the same batches for any compute dtype or kernel, to compare numerics."""
    from minillm_jax import data
    from minillm_jax.build import build_run
    from minillm_jax.sharding import to_global

    config = build_config(config, "losses")
    data.ensure_dataset(config.data.dataset, config.data.data_dir)
    run = build_run(config)
    step = run.compile_train_step()
    horizon = run.horizon(config.run.iterations)
    state = run.init_state()
    losses = []
    with data.TrainLoader(config.data.data_dir, batch_size=config.data.batch_size,
                          seq_len=config.model.sequence_length, seed=config.data.data_seed,
                          acc_steps=config.data.acc_steps) as loader:
        for _ in range(steps):
            state, metrics = step(state, to_global(next(loader), run.mesh, batch_axis=1), horizon)
            losses.append(metrics["loss"])
    return [float(x) for x in jax.device_get(losses)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m minillm_jax.benchmark",
        description="Train-step throughput: parameters, FLOPs/token, step time, tokens/s and MFU.")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
    args, c, _ = parse_config_args(parser, argv)
    if args.steps < 1 or args.warmup < 0:
        parser.error(f"--steps must be >= 1 and --warmup >= 0 (got {args.steps}, {args.warmup})")
    return run_command(lambda: _print_benchmark(c, args.steps, args.warmup), ConfigError)


def _print_benchmark(c: ml_collections.ConfigDict, steps: int, warmup: int) -> None:
    r = benchmark(c, steps=steps, warmup=warmup)
    print(f"model {c.model} L{c.n_layer} C{c.n_embd} H{c.n_head} T{c.sequence_length} "
          f"batch {c.batch_size}x{c.acc_steps} {c.compute_dtype} on {r['devices']} device(s)")
    print(f"parameters        {r['params']:,}")
    print(f"FLOPs per token   {r['flops_per_token']:.4g}")
    print(f"compile time      {r['compile_s']:.1f} s")
    print(f"step time         {1000 * r['step_time_s']:.1f} ms (median of {steps})")
    print(f"tokens/s          {r['tokens_per_s']:,.0f}")
    print(f"peak              {r['peak_flops_per_device'] / 1e12:.3f} TFLOP/s per device "
          f"({r['peak_source']})")
    print(f"MFU               {100 * r['mfu']:.1f}%")


if __name__ == "__main__":
    sys.exit(main())
