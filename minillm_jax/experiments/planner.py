"""Compute-budget planner: from accelerator-hours to a compute-optimal model and its config.

    python -m minillm_jax.experiments.planner --accelerator a100 --hours 3 [--mfu 0.4 | --measure configs/X.py]
    python -m minillm_jax.experiments.planner --hours 3 --measure-aot configs/X.py --target h100
    python tools/plan.py ...   (the same)

Budget. C = peak FLOP/s x devices x hours x 3600 x MFU, with the dense bf16 peaks of
minillm_jax.train.mfu (the one table of peaks, by exact device kind; --accelerator takes its short
names) or --peak-tflops. The MFU is assumed (--mfu), measured on this machine (--measure), or
predicted for a GPU target (--measure-aot: gpu_aot compiles the config's step for that GPU and its
roofline model predicts tokens/s; then C = predicted tokens/s x FLOPs/token x seconds).

Allocation (Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models"):
  * the 20-tokens-per-parameter rule with C = 6 N D:  N = sqrt(C / 120),  D = 20 N;
  * the parametric fit L(N, D) = E + A / N^alpha + B / D^beta (E=1.69, A=406.4, B=410.7,
    alpha=0.34, beta=0.28), minimised under C = 6 N D:
        N_opt = G (C/6)^(beta/(alpha+beta)),  D_opt = G^-1 (C/6)^(alpha/(alpha+beta)),
        G = (alpha A / (beta B))^(1/(alpha+beta)).
The seed's arithmetic: 3 A100-hours at 100% = 3.37e18 FLOPs -> N ~ 168M, D ~ 3.4B tokens.

Configs. Candidate shapes (head dim 64, depth/width aspect in a usual range) are counted exactly
with minillm_jax.model.transformer.num_params on abstract parameter shapes (llm-baselines' get_num_params: per
layer 12 C^2 + norms, plus the V x C tied embedding), given the tokens the budget buys at the
trainer's FLOPs per token (minillm_jax.train.mfu.flops_per_token: 6 N + causal attention; N here
includes the norm scales, < 0.02% of a tied model's matmul weights), and ranked
by the fit's predicted loss.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import sys
from typing import Any, Sequence

from minillm_jax.train.mfu import ACCELERATORS, DEVICE_PEAKS, flops_per_token

# Hoffmann et al. (2022), Approach 3 (their eq. 10 and Appendix D.2).
FIT_E, FIT_A, FIT_B, FIT_ALPHA, FIT_BETA = 1.69, 406.4, 410.7, 0.34, 0.28
TOKENS_PER_PARAM = 20.0

WINNING_MFU = 0.29  # the Mini LLM Challenge winner: ~85k tok/s on one A100 (docs/llm-baselines.md#derived-figures)
GOOD_MFU = 0.55  # a well-tuned trainer

HEAD_DIM = 64
# Widths to consider (multiples of 128) and the width/depth ratios kept (GPT-2/3 and llm-baselines
# sizes lie in 32..85: 12x768 = 64, 24x1024 = 43, the winner's 18x768 = 43). Within the range the
# fit prefers the widest shape for a given N (attention FLOPs per parameter fall with width), so
# the upper bound decides how shallow proposals get.
WIDTHS = (256, 384, 512, 640, 768, 896, 1024, 1280, 1536, 1792, 2048, 2560, 3072, 4096, 5120,
          6144, 8192)
ASPECT_RANGE = (32.0, 96.0)


class PlanError(ValueError):
    """A planner input that cannot work; the message says what to pass instead."""


# ---------------------------------------------------------------------------------------------
# Budget


def normalise_accelerator(name: str) -> str:
    """'A100', 'tpu-v5p', 'tpu_v4', 'v5e' -> the mfu.ACCELERATORS key."""
    key = name.strip().lower().replace("-", " ").replace("_", " ")
    key = " ".join(key.split())
    if key.startswith("tpu") and not key.startswith("tpu "):
        key = "tpu " + key[3:]
    if key in ACCELERATORS:
        return key
    if "tpu " + key in ACCELERATORS:
        return "tpu " + key
    raise PlanError(f"unknown accelerator {name!r}: use one of {accelerator_names()} or "
                    "--peak-tflops")


def accelerator_names() -> list[str]:
    return [k.replace(" ", "-") for k in ACCELERATORS]


def peak_for(accelerator: str) -> float:
    """Dense bf16 peak FLOP/s of one chip."""
    return DEVICE_PEAKS[ACCELERATORS[normalise_accelerator(accelerator)]]


def compute_budget(peak_flops: float, hours: float, mfu: float = 1.0, devices: int = 1) -> float:
    """C = peak FLOP/s x devices x seconds x MFU."""
    if peak_flops <= 0 or hours <= 0 or devices <= 0:
        raise PlanError("peak FLOP/s, hours and devices must be positive")
    if not 0 < mfu <= 1:
        raise PlanError(f"MFU {mfu} must be in (0, 1] (e.g. 0.4 for 40%)")
    return peak_flops * devices * hours * 3600.0 * mfu


# ---------------------------------------------------------------------------------------------
# Compute-optimal allocation


def chinchilla_20(compute: float, tokens_per_param: float = TOKENS_PER_PARAM,
                  ) -> tuple[float, float]:
    """(N, D) with D = k N and C = 6 N D: N = sqrt(C / (6 k))."""
    n = math.sqrt(compute / (6.0 * tokens_per_param))
    return n, tokens_per_param * n


def fit_G() -> float:
    return (FIT_ALPHA * FIT_A / (FIT_BETA * FIT_B)) ** (1.0 / (FIT_ALPHA + FIT_BETA))


def fit_optimum(compute: float) -> tuple[float, float]:
    """(N_opt, D_opt) minimising the parametric fit under C = 6 N D (closed form)."""
    g = fit_G()
    s = FIT_ALPHA + FIT_BETA
    n = g * (compute / 6.0) ** (FIT_BETA / s)
    d = (compute / 6.0) ** (FIT_ALPHA / s) / g
    return n, d


def predicted_loss(n_params: float, tokens: float) -> float:
    """L(N, D) = E + A / N^alpha + B / D^beta (nats/token on Hoffmann et al.'s MassiveText)."""
    return FIT_E + FIT_A / n_params ** FIT_ALPHA + FIT_B / tokens ** FIT_BETA


# ---------------------------------------------------------------------------------------------
# Parameter counts (exact, from abstract parameter shapes)


@functools.lru_cache(maxsize=None)
def _count_parts(model: str, n_embd: int, n_head: int, vocab_size: int, sequence_length: int,
                 tie_embeddings: bool, extra: tuple = ()) -> tuple[int, int]:
    """(parameters outside the blocks, parameters per block) by num_params on abstract shapes of
    a one-layer model; blocks are stacked along a leading n_layer axis, so counts are linear."""
    from minillm_jax.model.transformer import ModelConfig, abstract_params, build_model, count_params, num_params

    cfg = ModelConfig(model=model, n_layer=1, n_embd=n_embd, n_head=n_head, vocab_size=vocab_size,
                      sequence_length=sequence_length, tie_embeddings=tie_embeddings, **dict(extra))
    params = abstract_params(build_model(cfg))
    per_layer = count_params(params["blocks"])
    return num_params(params, cfg) - per_layer, per_layer


def param_count(n_layer: int, n_embd: int, n_head: int | None = None, *, model: str = "llama",
                vocab_size: int = 50304, sequence_length: int = 512, tie_embeddings: bool = True,
                **extra: Any) -> int:
    """llm-baselines' get_num_params() of a model shape (minillm_jax.model.transformer.num_params)."""
    n_head = n_head or max(1, n_embd // HEAD_DIM)
    fixed, per_layer = _count_parts(model, n_embd, n_head, vocab_size, sequence_length,
                                    bool(tie_embeddings), tuple(sorted(extra.items())))
    return fixed + n_layer * per_layer


def config_params(config: Any) -> int:
    """Exact parameter count of a run config (a ConfigDict or flat dict of config fields)."""
    from minillm_jax.model.transformer import ModelConfig, abstract_params, build_model, num_params

    flat = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    cfg = ModelConfig.from_flat(flat)
    return num_params(abstract_params(build_model(cfg)), cfg)


# ---------------------------------------------------------------------------------------------
# Proposals


@dataclasses.dataclass(frozen=True)
class Proposal:
    n_layer: int
    n_embd: int
    n_head: int
    params: int
    flops_per_token: float
    tokens: float  # what the budget buys at flops_per_token
    batch_size: int
    sequence_length: int
    iterations: int
    loss: float  # the parametric fit's prediction

    @property
    def tokens_per_param(self) -> float:
        return self.tokens / self.params

    @property
    def aspect(self) -> float:
        return self.n_embd / self.n_layer


def propose(compute: float, *, model: str = "llama", batch_size: int = 64,
            sequence_length: int = 512, vocab_size: int = 50304, top: int = 5,
            widths: Sequence[int] = WIDTHS, aspect_range: tuple[float, float] = ASPECT_RANGE,
            ) -> list[Proposal]:
    """The best `top` shapes by predicted loss, one per width (its best depth), head dim 64."""
    n_target = fit_optimum(compute)[0]
    tokens_per_step = batch_size * sequence_length
    best: list[Proposal] = []
    for width in widths:
        lo = max(1, math.ceil(width / aspect_range[1]))
        hi = max(lo, math.floor(width / aspect_range[0]))
        # Cheap pre-filter (12 C^2 per layer + V C), then exact counts for widths that can fit.
        if 12 * width * width * lo + vocab_size * width > 8 * n_target:
            continue
        if 12 * width * width * hi + vocab_size * width < n_target / 8:
            continue
        candidates = []
        for n_layer in range(lo, hi + 1):
            n = param_count(n_layer, width, width // HEAD_DIM, model=model, vocab_size=vocab_size,
                            sequence_length=sequence_length)
            fpt = flops_per_token(n, n_layer, width, sequence_length)
            tokens = compute / fpt
            candidates.append(Proposal(
                n_layer=n_layer, n_embd=width, n_head=width // HEAD_DIM, params=n,
                flops_per_token=fpt, tokens=tokens, batch_size=batch_size,
                sequence_length=sequence_length,
                iterations=max(1, math.ceil(tokens / tokens_per_step)),
                loss=predicted_loss(n, tokens)))
        best.append(min(candidates, key=lambda p: p.loss))
    if not best:  # a budget below every allowed shape: offer the smallest one
        width = min(widths)
        n_layer = max(1, math.ceil(width / aspect_range[1]))
        n = param_count(n_layer, width, width // HEAD_DIM, model=model, vocab_size=vocab_size,
                        sequence_length=sequence_length)
        fpt = flops_per_token(n, n_layer, width, sequence_length)
        best.append(Proposal(n_layer, width, width // HEAD_DIM, n, fpt, compute / fpt, batch_size,
                             sequence_length, max(1, math.ceil(compute / fpt / tokens_per_step)),
                             predicted_loss(n, compute / fpt)))
    return sorted(best, key=lambda p: p.loss)[:top]


# ---------------------------------------------------------------------------------------------
# Report


def _si(x: float, unit: str = "") -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.4g}{suffix}{unit}"
    return f"{x:.0f}{unit}"


def plan_lines(*, peak: float, peak_name: str, hours: float, mfu: float, devices: int = 1,
               model: str = "llama", batch_size: int = 64, sequence_length: int = 512,
               vocab_size: int = 50304, top: int = 5, mfu_source: str = "") -> list[str]:
    """The planner's report as text lines."""
    seconds = hours * 3600.0
    full = compute_budget(peak, hours, 1.0, devices)
    n20, d20 = chinchilla_20(full)
    nfit, dfit = fit_optimum(full)
    lines = [
        f"Budget: {hours:g} h x {devices} x {peak_name} at {peak / 1e12:g} TFLOP/s peak "
        f"= {full:.4g} FLOPs at 100% MFU",
        "",
        "Compute-optimal allocation at 100% MFU",
        f"  Chinchilla 20 tokens/param (C = 6ND):   N = {_si(n20)} parameters, "
        f"D = {_si(d20)} tokens, predicted loss {predicted_loss(n20, d20):.3f}",
        f"  Hoffmann et al. parametric fit optimum:  N = {_si(nfit)} parameters, "
        f"D = {_si(dfit)} tokens, predicted loss {predicted_loss(nfit, dfit):.3f}",
        f"  (fit L = {FIT_E} + {FIT_A}/N^{FIT_ALPHA} + {FIT_B}/D^{FIT_BETA}; its losses are for "
        "MassiveText, a guide to ranking, not absolute values)",
        "",
        "What the budget buys at a given MFU",
        f"  {'MFU':>5}  {'C (FLOPs)':>10}  {'tok/s needed':>12}  {'N (20 t/p)':>10}  "
        f"{'D (20 t/p)':>10}  {'N (fit)':>8}  {'D (fit)':>8}  {'loss (fit)':>10}",
    ]
    rows = sorted({1.0, mfu, GOOD_MFU, WINNING_MFU}, reverse=True)
    for m in rows:
        c = compute_budget(peak, hours, m, devices)
        n20, d20 = chinchilla_20(c)
        nfit, dfit = fit_optimum(c)
        note = {GOOD_MFU: "(a good trainer)", WINNING_MFU: "(the challenge winner)"}.get(m, "")
        if m == mfu:
            note = ("<- " + (mfu_source or "chosen") + " " + note).strip()
        note = "  " + note if note else ""
        lines.append(
            f"  {100 * m:>4.0f}%  {c:>10.3g}  {_si(d20 / seconds):>12}  {_si(n20):>10}  "
            f"{_si(d20):>10}  {_si(nfit):>8}  {_si(dfit):>8}  {predicted_loss(nfit, dfit):>10.3f}"
            f"{note}")
    c = compute_budget(peak, hours, mfu, devices)
    proposals = propose(c, model=model, batch_size=batch_size, sequence_length=sequence_length,
                        vocab_size=vocab_size, top=top)
    lines += [
        "",
        f"Proposed {model} configs at {100 * mfu:.0f}% MFU (C = {c:.3g} FLOPs), head dim "
        f"{HEAD_DIM}, batch {batch_size} x seq {sequence_length} = "
        f"{batch_size * sequence_length:,} tokens/step, best predicted loss first:",
        f"  {'n_layer':>7}  {'n_embd':>6}  {'n_head':>6}  {'params':>13}  {'GFLOP/tok':>9}  "
        f"{'tokens':>8}  {'tok/param':>9}  {'iterations':>10}  {'tok/s':>7}  {'loss (fit)':>10}",
    ]
    for p in proposals:
        lines.append(
            f"  {p.n_layer:>7}  {p.n_embd:>6}  {p.n_head:>6}  {p.params:>13,}  "
            f"{p.flops_per_token / 1e9:>9.3f}  {_si(p.tokens):>8}  {p.tokens_per_param:>9.1f}  "
            f"{p.iterations:>10,}  {_si(p.tokens / seconds):>7}  {p.loss:>10.3f}")
    best = proposals[0]
    lines += [
        "",
        f"e.g. python -m minillm_jax.main --config configs/base.py --config.model={model} "
        f"--config.n_layer={best.n_layer} --config.n_embd={best.n_embd} "
        f"--config.n_head={best.n_head} --config.batch_size={batch_size} --config.acc_steps=1 "
        f"--config.sequence_length={sequence_length} --config.iterations={best.iterations}",
    ]
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m minillm_jax.experiments.planner",
        description="Compute budget -> compute-optimal parameters, tokens and configs "
                    "(Chinchilla).")
    parser.add_argument("--accelerator", default="",
                        help=f"one of {', '.join(accelerator_names())} (bf16 dense peak); "
                             "with --measure, default: the current device; with "
                             "--measure-aot, the target's")
    parser.add_argument("--peak-tflops", type=float, default=0.0,
                        help="peak TFLOP/s per device (instead of --accelerator)")
    parser.add_argument("--devices", type=int, default=1, help="number of accelerators")
    parser.add_argument("--hours", type=float, required=True, help="wall-clock hours")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--mfu", type=float, default=None,
                       help="model FLOPs utilisation in (0, 1], e.g. 0.4 (default 1.0)")
    group.add_argument("--measure", default="", metavar="CONFIG",
                       help="measure MFU by benchmarking this config file on the current device")
    group.add_argument("--measure-aot", default="", metavar="CONFIG",
                       help="predict MFU: compile this config file for --target's GPU (no GPU "
                            "needed; tools/gpu_aot.py) and use its roofline tokens/s")
    parser.add_argument("--target", default="",
                        help="the GPU for --measure-aot: a100-40, a100-80, h100, h200 or l4; "
                             "its device kind sets the peak")
    parser.add_argument("--measure-steps", type=int, default=3, help="timed steps for --measure")
    parser.add_argument("--model", default="llama", choices=("llama", "gpt"),
                        help="architecture of the proposed configs")
    parser.add_argument("--batch-size", type=int, default=64, help="sequences per step")
    parser.add_argument("--seq", type=int, default=512, help="sequence length")
    parser.add_argument("--vocab", type=int, default=50304, help="vocabulary size")
    parser.add_argument("--top", type=int, default=5, help="number of proposed configs")
    return parser


def measure_mfu(config_path: str, steps: int = 3) -> dict[str, Any]:
    """benchmark() of a config file on the current device."""
    from minillm_jax.experiments.benchmark import benchmark
    from minillm_jax.config import load_config

    return benchmark(load_config(config_path), steps=steps, warmup=1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.hours <= 0 or args.devices <= 0:
        parser.error("--hours and --devices must be positive")
    mfu, mfu_source, peak, peak_name = args.mfu, "", 0.0, ""
    if args.target and not args.measure_aot:
        parser.error("--target goes with --measure-aot CONFIG")
    if args.measure_aot:
        from minillm_jax.experiments import planner_aot

        try:
            accelerator = normalise_accelerator(args.accelerator) if args.accelerator else ""
        except PlanError as err:
            parser.error(str(err))
        from minillm_jax.config.cli import run_command

        predicted: list = []
        status = run_command(lambda: predicted.append(planner_aot.predict(
            args.measure_aot, args.target, args.devices, accelerator=accelerator,
            peak_tflops=args.peak_tflops)), {planner_aot.PredictionDoesNotFit: 1,
                                             planner_aot.PredictionError: 2})
        if status:
            return status
        prediction = predicted[0]
        print("\n".join(prediction.lines(args.hours)) + "\n")
        mfu, peak, peak_name = prediction.mfu, prediction.peak, prediction.peak_name
        mfu_source = prediction.source
    elif args.peak_tflops > 0:
        peak, peak_name = args.peak_tflops * 1e12, "custom"
    elif args.accelerator:
        try:
            peak, peak_name = peak_for(args.accelerator), normalise_accelerator(args.accelerator)
        except PlanError as err:
            parser.error(str(err))
    elif not args.measure:
        parser.error("pass --accelerator NAME or --peak-tflops T (or --measure CONFIG to use the "
                     "current device, or --measure-aot CONFIG --target GPU)")
    if args.measure:
        import jax

        from minillm_jax.config import ConfigError

        try:
            result = measure_mfu(args.measure, args.measure_steps)
        except ConfigError as err:
            parser.error(f"--measure {args.measure}: {err}")
        device = jax.devices()[0]
        if result["mfu"] is None:
            parser.error(f"--measure: MFU n/a on {device.device_kind!r} (no peak FLOP/s known "
                         "for it); pass --mfu and --peak-tflops instead")
        mfu = min(1.0, result["mfu"])
        mfu_source = (f"measured: {args.measure} on {device.device_kind}, "
                      f"{result['tokens_per_s']:,.0f} tok/s")
        print(f"measured {args.measure}: {result['params']:,} parameters, "
              f"{result['tokens_per_s']:,.0f} tokens/s on {result['devices']} "
              f"{device.platform} device(s), MFU {100 * result['mfu']:.1f}% of "
              f"{result['peak_flops_per_device'] / 1e12:.3g} TFLOP/s ({result['peak_source']})")
        if not peak:
            peak = result["peak_flops_per_device"]
            peak_name = device.device_kind
        elif device.platform == "cpu":
            print(f"note: MFU was measured on CPU and is applied to the {peak_name} peak; "
                  "measure on the target accelerator for a real figure")
        print()
    if mfu is None:
        mfu = 1.0
    if not 0 < mfu <= 1:
        parser.error(f"--mfu {mfu} must be in (0, 1]")
    print("\n".join(plan_lines(
        peak=peak, peak_name=peak_name, hours=args.hours, mfu=mfu, devices=args.devices,
        model=args.model, batch_size=args.batch_size, sequence_length=args.seq,
        vocab_size=args.vocab, top=args.top, mfu_source=mfu_source)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
