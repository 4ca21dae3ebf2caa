"""Plan a GPU run without a GPU: compile a config's train step with the real XLA GPU compiler
for a target GPU, and report its exact memory, its kernels, its saved activations and a
predicted step time.

    python tools/gpu_aot.py --config configs/best_fused.py --target h100
    python tools/gpu_aot.py --config configs/best.py --target a100-40 --max-batch
    python tools/gpu_aot.py --config configs/best_fused.py --target h100 --devices 8 \\
        --config.mesh_fsdp=8 --json runs/aot/best_fused.json
    minillm-gpu-aot ...   (the same)

Targets: a100-40, a100-80, h100 (SXM), h200, l4 (minillm_jax/assets/gpu_targets, each citing its
source), or any GPU with --target-config FILE (a stream_executor.GpuTargetConfigProto text).
Needs JAX's CUDA plugin (`pip install -e ".[cuda12]"`), not a GPU: without the plugin the command
prints one line and exits 2.

Memory is XLA's buffer assignment for the target, the numbers the GPU run will have. Times are a
roofline model of the compiled kernels (minillm_jax/experiments/aot/roofline.py): every time,
tokens/s and MFU printed is *predicted*, never measured. `tools/gpu_check.py` records these
predictions beside its measurements when a GPU is there.

--max-batch bisects the global batch size (a multiple of the data-parallel device count) for
the largest that fits in JAX's share of the card's memory, compiling once per probe.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Sequence

from minillm_jax import deps

if TYPE_CHECKING:
    from minillm_jax.experiments.aot.targets import GpuTarget


def largest_fitting(fits: Callable[[int], bool], step: int, start: int) -> int | None:
    """The largest multiple of `step` for which `fits` holds (fits is monotone: true up to some
    size), probing upward by doubling from `start`, then bisecting; None if even `step` does
    not fit."""
    low, high = 0, max(step, start - start % step)
    while fits(high):
        low, high = high, 2 * high
    if low == 0:
        if not fits(step):
            return None
        low = step
    while high - low > step:
        middle = (low + high) // 2 // step * step
        if middle <= low:
            break
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def predict_config(config: Any, name: str, target: GpuTarget, n_devices: int = 1,
                   ) -> dict[str, Any]:
    """report.analyse() of `config`'s train step compiled for `n_devices` GPUs of `target`: its
    memory, whether it fits, and the roofline prediction. One function, so that the planner's
    --measure-aot predicts exactly what this tool reports."""
    from minillm_jax.config import build_config
    from minillm_jax.experiments.aot.report import analyse
    from minillm_jax.experiments.aot.targets import compile_train_step

    config.compilation_cache = "off"  # nothing to cache: this step never runs here
    step = compile_train_step(build_config(config, name), target, n_devices)
    return analyse(step, target, n_devices, name)


def run(args: argparse.Namespace, config: Any, name: str) -> int:
    from minillm_jax.config import build_config, check_devices
    from minillm_jax.experiments.aot.report import markdown, memory
    from minillm_jax.experiments.aot.targets import compile_train_step, load_target

    target = load_target(args.target, args.target_config)
    config.compilation_cache = "off"  # nothing to cache: this step never runs here
    best = None
    if args.max_batch:
        # the mesh check the run makes: data x fsdp must be all devices, so the global batch
        # is a multiple of the device count
        check_devices(build_config(config, name), args.devices)
        step = args.devices

        def fits(batch: int) -> bool:
            probe = config.copy_and_resolve_references()
            probe.batch_size = batch
            total = memory(compile_train_step(build_config(probe, name), target,
                                              args.devices).compiled)["total_bytes"]
            verdict = total <= target.usable_bytes
            print(f"batch {batch}: {total / 2**30:.2f} GiB per device -> "
                  f"{'fits' if verdict else 'does not fit'}", file=sys.stderr, flush=True)
            return verdict

        best = largest_fitting(fits, step, config.batch_size)
        if best is None:
            raise DoesNotFit(f"not even a batch of {step} fits {target.device_kind} "
                             f"({target.usable_bytes / 2**30:.1f} GiB usable): raise remat "
                             "(full), lower sequence_length or use more devices")
        config.batch_size = best
    report = predict_config(config, name, target, args.devices)
    if best is not None:
        report["max_batch"] = best
    text = markdown(report)
    if best is not None:
        above = best + args.devices
        text += f"\nLargest global batch that fits: {best} (batch {above} does not).\n"
    print(text, end="")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=str)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    deps.require()
    from minillm_jax.config.cli import parse_config_args, run_command

    parser = argparse.ArgumentParser(prog="python -m minillm_jax.experiments.gpu_aot",
                                     description=__doc__.strip().splitlines()[0])
    parser.add_argument("--target", default="h100",
                        help="a shipped GPU: a100-40, a100-80, h100, h200, l4 (default h100)")
    parser.add_argument("--target-config", metavar="FILE",
                        help="any other GPU: a GpuTargetConfigProto text file")
    parser.add_argument("--devices", type=int, default=1,
                        help="GPUs in one node; the config's mesh_data/mesh_fsdp split them")
    parser.add_argument("--max-batch", action="store_true",
                        help="find the largest global batch that fits (compiles once per probe)")
    parser.add_argument("--json", metavar="OUT", help="also write the report as JSON")
    args, config, name = parse_config_args(parser, argv)
    if args.devices < 1:
        parser.error(f"--devices {args.devices}: must be at least 1")
    if args.json:
        args.json = os.path.abspath(args.json)
    from minillm_jax.experiments.aot.targets import (PLUGIN_HINT, compile_on_host,
                                                     cuda_plugin_missing)

    from minillm_jax.config import ConfigError

    if cuda_plugin_missing():
        return run_command(lambda: _raise(ConfigError(PLUGIN_HINT)), (ConfigError,))
    compile_on_host()
    return run_command(lambda: run(args, config, name), {DoesNotFit: 1, ConfigError: 2})


class DoesNotFit(Exception):
    """Not even the smallest batch fits the target (exit status 1)."""


def _raise(err: Exception) -> None:
    raise err


if __name__ == "__main__":
    sys.exit(main())
