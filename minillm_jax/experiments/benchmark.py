"""Throughput and MFU of the compiled train step (the judge of speed; no data loading involved).

FLOPs per token, device peaks and MFU come from minillm_jax.train.mfu (the one accounting shared with
gpu_check, the trainer's log and the planner): 6 x the weights a token multiplies through (the
output head included, an untied input embedding not: it is a gather) plus causal attention
counted as half, over the exact-device-kind datasheet peak times the device count. On a CPU the
"peak" is a timed float32 matmul (labelled as measured); an accelerator not in the table gets
"MFU n/a".

Command line (also tools/bench.py): parameters, FLOPs/token, step time, tokens/s and MFU of a
config's train step on the devices present.

    python -m minillm_jax.experiments.benchmark --config configs/demo.py [--config.n_layer=4 ...] [--steps 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import ml_collections

from minillm_jax.config.cli import override_tokens, parse_config_args, run_command
from minillm_jax.config import ConfigError, TrainConfig, build_config
from minillm_jax.train.mfu import Peak, device_peak, mfu, model_flops_per_token

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


def peak_flops(compute_dtype: str = "float32") -> Peak:
    """Peak FLOP/s of one device: the datasheet entry for an accelerator's exact device kind
    (None for an unknown one), a timed matmul on a CPU."""
    device = jax.devices()[0]
    if device.platform != "cpu":
        return device_peak(device)
    dtype = jnp.bfloat16 if compute_dtype == "bfloat16" else jnp.float32
    return Peak(measure_matmul_peak(dtype=dtype),
                f"measured {jnp.dtype(dtype).name} matmul on {device.device_kind}")


def random_batch(run: Any, config: TrainConfig) -> dict[str, jax.Array]:
    """One batch of random token ids in the run's batch shape and sharding (seeded)."""
    shape = run.batch_shape
    tokens = np.random.default_rng(0).integers(0, min(config.model.vocab_size, 50257),
                                               (shape[0], shape[1], shape[2] + 1))
    return jax.device_put({"x": tokens[..., :-1].astype(np.int32),
                           "y": tokens[..., 1:].astype(np.int32)}, run.batch_sharding)


def benchmark(config: TrainConfig | ml_collections.ConfigDict, steps: int = 5, warmup: int = 2,
              ) -> dict[str, Any]:
    """Compiles the real train step for `config` and times it on random tokens."""
    from minillm_jax.train.build import build_run
    from minillm_jax.model.params_info import active_params

    config = build_config(config, "bench")
    run = build_run(config)
    state = run.init_state()
    shape = run.batch_shape
    batch = random_batch(run, config)
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
    fpt = model_flops_per_token(params, config.model)
    tokens_per_step = int(np.prod(shape))
    peak = peak_flops(run.config.execution.compute_dtype)  # auto resolved for the device
    n_dev = jax.device_count()
    tps = tokens_per_step / step_time
    return {"params": active_params(params, config.model), "flops_per_token": fpt,
            "compile_s": compile_s, "step_time_s": step_time, "step_times_s": times,
            "tokens_per_s": tps,
            "devices": n_dev, "device_kind": jax.devices()[0].device_kind,
            "compute_dtype": run.config.execution.compute_dtype,
            "peak_flops_per_device": peak.flops, "peak_source": peak.source,
            "mfu": mfu(tps, fpt, peak.flops, n_dev), "loss": float(metrics["loss"])}


def train_losses(config: TrainConfig | ml_collections.ConfigDict, steps: int) -> list[float]:
    """Per-step training losses of `config`'s first `steps` steps on its real data (no eval, no
    checkpoints): the same batches for any compute dtype or kernel, to compare numerics."""
    from minillm_jax import data
    from minillm_jax.train.build import build_run
    from minillm_jax.train.sharding import to_global

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
        prog="python -m minillm_jax.experiments.benchmark",
        description="Train-step throughput: parameters, FLOPs/token, step time, tokens/s and MFU.")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
    parser.add_argument("--compare-llm-baselines", metavar="PATH", default=None,
                        help="an llm-baselines checkout: time its PyTorch step and ours in "
                             "alternating fresh processes and print the speed ratio "
                             "(minillm_jax.experiments.versus_llm_baselines)")
    parser.add_argument("--pairs", type=int, default=3, help="alternating pairs to compare")
    parser.add_argument("--json", action="store_true",
                        help="print the measurements as one JSON line instead of the table")
    argv = list(sys.argv[1:] if argv is None else argv)
    args, c, _ = parse_config_args(parser, argv)
    if args.steps < 1 or args.warmup < 0 or args.pairs < 1:
        parser.error(f"--steps must be >= 1, --pairs >= 1 and --warmup >= 0 (got {args.steps}, "
                     f"{args.pairs}, {args.warmup})")
    if args.compare_llm_baselines:
        from minillm_jax.experiments.versus_llm_baselines import ComparisonError, main_compare
        from minillm_jax.export.errors import ConversionError

        config_args = ["--config", args.config, *override_tokens(argv)]
        return run_command(lambda: main_compare(args.compare_llm_baselines, config_args,
                                                args.pairs, args.steps, args.warmup),
                           (ConfigError, ComparisonError, ConversionError))
    if args.json:
        return run_command(lambda: print(json.dumps(benchmark(c, args.steps, args.warmup))),
                           ConfigError)
    return run_command(lambda: _print_benchmark(c, args.steps, args.warmup), ConfigError)


def _print_benchmark(c: ml_collections.ConfigDict, steps: int, warmup: int) -> None:
    r = benchmark(c, steps=steps, warmup=warmup)
    print(f"model {c.model} L{c.n_layer} C{c.n_embd} H{c.n_head} T{c.sequence_length} "
          f"batch {c.batch_size}x{c.acc_steps} {r['compute_dtype']} on {r['devices']} device(s)")
    print(f"parameters        {r['params']:,}")
    print(f"FLOPs per token   {r['flops_per_token']:.4g}")
    print(f"compile time      {r['compile_s']:.1f} s")
    print(f"step time         {1000 * r['step_time_s']:.1f} ms (median of {steps})")
    print(f"tokens/s          {r['tokens_per_s']:,.0f}")
    if r["peak_flops_per_device"] is None:
        print(f"peak              unknown ({r['peak_source']})")
        print(f"MFU               n/a on {r['device_kind']}")
    else:
        print(f"peak              {r['peak_flops_per_device'] / 1e12:.3f} TFLOP/s per device "
              f"({r['peak_source']})")
        print(f"MFU               {100 * r['mfu']:.1f}%")


if __name__ == "__main__":
    sys.exit(main())
