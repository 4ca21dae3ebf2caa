"""The planner's --measure-aot: the throughput a config is *predicted* to reach on a GPU target,
for budgeting a GPU run from a machine without one.

gpu_aot compiles the config's train step with the real XLA GPU compiler for the target and its
roofline model (minillm_jax/experiments/aot/roofline.py) predicts the step time; the predicted
tokens/s gives the MFU of the target's datasheet peak (minillm_jax.train.mfu DEVICE_PEAKS, by the
target's device kind), so C = peak x devices x seconds x MFU = predicted tokens/s x FLOPs/token x
seconds. Nothing here is measured; the output says so.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

from minillm_jax.experiments.aot import targets
from minillm_jax.experiments.aot.targets import GpuTarget
from minillm_jax.train.mfu import ACCELERATORS, DEVICE_PEAKS

GIB = 2**30


class PredictionError(ValueError):
    """No usable prediction; the message (one line) says what to change. `status` is the exit
    status: 2 for bad input or a missing CUDA plugin, 1 when the step does not fit the GPU."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


class PredictionDoesNotFit(PredictionError):
    """The config's step does not fit the target's memory (exit status 1)."""



@dataclasses.dataclass(frozen=True)
class Prediction:
    """gpu_aot's report of one config on `devices` GPUs of one target, as the planner uses it."""

    config_path: str
    target: GpuTarget
    devices: int
    report: dict[str, Any]  # aot.report.analyse()

    @property
    def mfu(self) -> float:
        return min(1.0, self.report["predicted_mfu"])

    @property
    def peak(self) -> float:
        return self.target.peak_flops

    @property
    def peak_name(self) -> str:
        return f"{self.target.device_kind} ({self.target.name})"

    @property
    def source(self) -> str:
        """The MFU table's note on where this MFU comes from."""
        return (f"predicted: {os.path.basename(self.config_path)} on {self.target.name}, "
                f"{self.report['predicted_tokens_per_s']:,.0f} tok/s")

    def lines(self, hours: float) -> list[str]:
        """What was predicted, that it is a prediction, the memory verdict and the budget."""
        r, t = self.report, self.target
        budget = self.peak * self.devices * hours * 3600.0 * self.mfu
        return [
            f"Throughput: predicted, not measured. {self.config_path} compiled for "
            f"{self.devices} x {t.device_kind} ({t.name}) by the XLA GPU compiler; a roofline "
            f"model of the compiled step predicts {r['predicted_tokens_per_s']:,.0f} tokens/s, "
            f"MFU {100 * r['predicted_mfu']:.2f}% of {self.peak / 1e12:g} TFLOP/s per device "
            f"({r['flops_per_token'] / 1e9:.3f} GFLOP/token).",
            f"Memory: the step fits ({r['total_bytes'] / GIB:.2f} GiB of "
            f"{r['usable_bytes'] / GIB:.2f} GiB usable per device).",
            f"Budget at that MFU: C = {r['predicted_tokens_per_s']:,.0f} tokens/s x "
            f"{r['flops_per_token'] / 1e9:.3f} GFLOP/token x {hours:g} h x 3600 s/h = "
            f"{budget:.6g} FLOPs. The proposals below assume other shapes reach this MFU too.",
        ]


def accelerator_matches(accelerator: str, target: GpuTarget) -> bool:
    """Whether the planner's accelerator key (mfu.ACCELERATORS) names the GPU of `target`: its
    device kind, or its family's short name with the same peak ("a100" for a100-40 and a100-80,
    which differ only in memory)."""
    kind = ACCELERATORS[accelerator]
    if kind == target.device_kind:
        return True
    family = re.sub(r"-\d+$", "", target.name)
    return family == accelerator and DEVICE_PEAKS[kind] == target.peak_flops


def resolve_target(name: str, accelerator: str = "", peak_tflops: float = 0.0) -> GpuTarget:
    """The shipped GPU target `name`, checked against the planner's other peak options."""
    names = ", ".join(targets.target_names())
    if not name:
        raise PredictionError(f"--measure-aot needs --target NAME, one of {names}")
    if name not in targets.target_names():
        raise PredictionError(f"unknown GPU target {name!r} for --measure-aot: use one of {names}")
    target = targets.load_target(name)
    if peak_tflops > 0:
        raise PredictionError(f"--peak-tflops and --target both set the peak ({target.name}: "
                              f"{target.peak_flops / 1e12:g} TFLOP/s): drop --peak-tflops")
    if accelerator and not accelerator_matches(accelerator, target):
        raise PredictionError(
            f"--accelerator {accelerator} ({ACCELERATORS[accelerator]}) and --target "
            f"{target.name} ({target.device_kind}) disagree: drop --accelerator (the target "
            "sets the peak) or pick the matching target")
    return target


def predict(config_path: str, target_name: str, devices: int = 1, *, accelerator: str = "",
            peak_tflops: float = 0.0) -> Prediction:
    """Compiles `config_path` for `devices` GPUs of `target_name` and returns the prediction;
    PredictionError when the inputs disagree, the CUDA plugin is missing or the step does not
    fit the GPU's memory."""
    from minillm_jax.config import ConfigError

    target = resolve_target(target_name, accelerator, peak_tflops)
    if not os.path.isfile(config_path):
        raise PredictionError(f"--measure-aot {config_path}: no such config file")
    if targets.cuda_plugin_missing():
        raise PredictionError(targets.PLUGIN_HINT)
    targets.compile_on_host()
    try:
        report = compile_report(config_path, target, devices)
    except ConfigError as err:
        raise PredictionError(f"--measure-aot {config_path}: {err}") from err
    if not report["fits"]:
        on = f"--target {target.name}" + (f" --devices {devices}" if devices > 1 else "")
        raise PredictionDoesNotFit(
            f"{config_path} does not fit {devices} x {target.device_kind} ({target.name}): its "
            f"step needs {report['total_bytes'] / GIB:.2f} GiB per device, "
            f"{report['usable_bytes'] / GIB:.2f} GiB usable; lower batch_size (raising "
            f"acc_steps keeps the tokens per step; python tools/gpu_aot.py --config "
            f"{config_path} {on} --max-batch finds the largest that fits) or "
            "set remat", status=1)
    return Prediction(config_path, target, devices, report)


def compile_report(config_path: str, target: GpuTarget, devices: int) -> dict[str, Any]:
    """gpu_aot's report of a config file compiled for `devices` GPUs of `target`."""
    from minillm_jax.config import load_config
    from minillm_jax.experiments.gpu_aot import predict_config

    name = os.path.splitext(os.path.basename(config_path))[0]
    return predict_config(load_config(config_path), name, target, devices)
