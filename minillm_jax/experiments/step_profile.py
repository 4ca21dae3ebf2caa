"""Where a train step's time goes, per kind of work: our compiled step (JAX's profiler) and, given
an llm-baselines checkout, their PyTorch step (torch.profiler), in the same categories.

    python -m minillm_jax.experiments.step_profile --config configs/bench_cpu.py [--llm-baselines PATH]

Ours: the step runs under `jax.profiler.trace`; every executed HLO op (a fusion, a dot, a copy,
...) is one profiler event named after its instruction. The compiled module's text says what
each instruction is (a fusion holding a dot is a matmul) and which of our source files it came
from (the stack frames XLA keeps in the metadata), which gives its category. Events nested in
others (the bodies of while loops: layer scans, loss chunks) count their own time only.

Theirs: `torch.profiler` self CPU time per aten op, the optimizer step and gradient clipping
counted whole, by op name.

Categories, the same on both sides:
  matmuls             every dot / mm / addmm outside attention (layers and the output head)
  attention           the attention core: scores, mask, softmax, weighted sum (fused SDPA there)
  softmax & loss      the output layer's log-softmax / log-sum-exp, probabilities, one-hot
  norms & elementwise layer norms, GELU, residual adds, dropout, embedding lookups
  optimizer           AdamW, gradient clipping and norm, our non-finite guard
  rest                copies, transposes, loop control, embedding-gradient scatter, the rest
"""

from __future__ import annotations

import argparse
import collections
import glob
import re
import sys
import tempfile
import time
from typing import Any, Sequence

CATEGORIES = ("matmuls", "attention", "softmax & loss", "norms & elementwise", "optimizer", "rest")

_INSTR = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = .*?\s([\w\-]+)\(")
_CALLS = re.compile(r"calls=%([\w.\-]+)")
_FRAME_ID = re.compile(r"stack_frame_id=(\d+)")
_COMPUTATION = re.compile(r"^%([\w.\-]+) .*\{$")


def _sections(hlo: str) -> tuple[dict[int, str], dict[int, int], dict[int, tuple[int, int]]]:
    """(file id -> path, location id -> file id, frame id -> (location id, parent frame id))."""
    files, locations, frames = {}, {}, {}
    section = None
    for line in hlo.splitlines():
        if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
            section = line
            continue
        if not line or line.startswith(("%", "ENTRY", "HloModule")):
            section = None if line.startswith(("%", "ENTRY")) else section
            continue
        parts = line.split(" ", 1)
        if section is None or len(parts) != 2 or not parts[0].isdigit():
            continue
        key = int(parts[0])
        if section == "FileNames":
            files[key] = parts[1].strip('"')
        elif section == "FileLocations":
            locations[key] = int(re.search(r"file_name_id=(\d+)", parts[1]).group(1))
        elif section == "StackFrames":
            loc = int(re.search(r"file_location_id=(\d+)", parts[1]).group(1))
            parent = int(re.search(r"parent_frame_id=(\d+)", parts[1]).group(1))
            frames[key] = (loc, parent)
    return files, locations, frames


def _frame_files(frame: int, files, locations, frames) -> list[str]:
    """Source files of a stack frame, innermost first."""
    out, seen = [], set()
    while frame in frames and frame not in seen:
        seen.add(frame)
        loc, parent = frames[frame]
        out.append(files.get(locations.get(loc, -1), ""))
        frame = parent
    return out


def _category_of_files(paths: Sequence[str], is_dot: bool) -> str:
    joined = " ".join(paths)
    if "model/attention.py" in joined:
        return "attention"
    if is_dot:
        return "matmuls"
    if "model/losses.py" in joined:
        return "softmax & loss"
    if "/optax/" in joined or "minillm_jax/optim/" in joined:
        return "optimizer"
    if "model/" in joined or "/flax/" in joined:
        return "norms & elementwise"
    if "train/step.py" in joined:
        return "optimizer"  # gradient norm, non-finite guard, micro-batch accumulation
    return "rest"


def classify_hlo(hlo: str) -> dict[str, str]:
    """{instruction name: category} for every instruction of a compiled module's text."""
    files, locations, frames = _sections(hlo)
    computations: dict[str, list[str]] = {}
    current = None
    for line in hlo.splitlines():
        m = _COMPUTATION.match(line) or (re.match(r"^ENTRY %([\w.\-]+) ", line))
        if m:
            current = m.group(1)
            computations[current] = []
        elif line == "}":
            current = None
        elif current is not None:
            computations[current].append(line)

    def has_dot(comp: str, depth: int = 0) -> bool:
        for line in computations.get(comp, []):
            m = _INSTR.match(line)
            if m and m.group(2) in ("dot", "convolution"):
                return True
            called = _CALLS.search(line)
            if called and depth < 4 and m and m.group(2) == "fusion" and has_dot(called.group(1),
                                                                                  depth + 1):
                return True
        return False

    def files_of(line: str, comp: str | None) -> list[str]:
        frame = _FRAME_ID.search(line)
        paths = _frame_files(int(frame.group(1)), files, locations, frames) if frame else []
        if comp:  # a fusion: the files of everything inside it too
            for inner in computations.get(comp, []):
                f = _FRAME_ID.search(inner)
                if f:
                    paths += _frame_files(int(f.group(1)), files, locations, frames)
        return paths

    categories = {}
    for comp, lines in computations.items():
        for line in lines:
            m = _INSTR.match(line)
            if not m:
                continue
            name, op = m.group(1), m.group(2)
            called = _CALLS.search(line)
            fused = called.group(1) if called and op == "fusion" else None
            is_dot = op in ("dot", "convolution") or (fused is not None and has_dot(fused))
            categories[name] = _category_of_files(files_of(line, fused), is_dot)
    return categories


def _self_times(events: Sequence[Any]) -> dict[str, float]:
    """{event name: total self time in s}; an event's self time excludes events nested in it
    on the same thread (the bodies of while loops)."""
    ordered = sorted(events, key=lambda e: (e.start_ns, -e.duration_ns))
    totals: dict[str, float] = collections.defaultdict(float)
    stack: list[list] = []  # [end_ns, name, nested_ns, duration_ns]

    def close(entry: list) -> None:
        totals[entry[1]] += (entry[3] - entry[2]) / 1e9
    for e in ordered:
        start, end = e.start_ns, e.start_ns + e.duration_ns
        while stack and stack[-1][0] <= start:
            close(stack.pop())
        if stack:
            stack[-1][2] += e.duration_ns
        stack.append([end, e.name, 0.0, e.duration_ns])
    while stack:
        close(stack.pop())
    return totals


def profile_ours(config: Any, steps: int = 3, warmup: int = 2) -> dict[str, Any]:
    """Seconds per step by category for our compiled train step of `config`."""
    import jax

    from minillm_jax.config import build_config
    from minillm_jax.experiments.benchmark import random_batch
    from minillm_jax.train.build import build_run

    config = build_config(config, "profile")
    run = build_run(config)
    state = run.init_state()
    batch = random_batch(run, config)
    compiled = run.compile_train_step()
    categories = classify_hlo(compiled.as_text())
    horizon = run.horizon(config.run.iterations)
    for _ in range(warmup):
        state, metrics = compiled(state, batch, horizon)
    jax.block_until_ready(state)
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir):
            start = time.perf_counter()
            for _ in range(steps):
                state, metrics = compiled(state, batch, horizon)
                jax.block_until_ready(state)
            wall = time.perf_counter() - start
        path = glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)[0]
        data = jax.profiler.ProfileData.from_file(path)
    by_op: dict[str, float] = collections.defaultdict(float)
    for plane in data.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:  # one thread each; nesting is per thread
            if line.name == "python":  # the dispatching Python thread
                continue
            events = [e for e in line.events if not e.name.startswith("end: ")]
            for name, seconds in _self_times(events).items():
                by_op[name] += seconds
    totals = dict.fromkeys(CATEGORIES, 0.0)
    for name, seconds in by_op.items():
        if name.startswith(("ThunkExecutor", "ThreadpoolListener")):
            continue  # the executor's own wrappers and waits, not work
        totals[categories.get(name, "rest")] += seconds / steps
    # Independent ops run concurrently on the CPU's threads, so op times can add up to more
    # than the step: scale them to the step's wall time to compare with a sequential runtime.
    op_time = sum(totals.values())
    scale = (wall / steps) / op_time if op_time > 0 else 1.0
    return {"categories": {k: v * scale for k, v in totals.items()}, "op_time_s": op_time,
            "step_time_s": wall / steps,
            "ops": {k: v / steps for k, v in by_op.items() if not k.startswith("Thunk")}}


TORCH_CATEGORIES = {
    "matmuls": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"),
    "attention": ("aten::_scaled_dot_product_flash_attention_for_cpu",
                  "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
                  "aten::_scaled_dot_product_efficient_attention",
                  "aten::_efficient_attention_backward", "aten::_softmax",
                  "aten::_softmax_backward_data", "aten::masked_fill_", "aten::tril"),
    "softmax & loss": ("aten::_log_softmax", "aten::_log_softmax_backward_data",
                       "aten::nll_loss_forward", "aten::nll_loss_backward",
                       "aten::nll_loss_nd", "aten::cross_entropy_loss"),
    "norms & elementwise": ("aten::native_layer_norm", "aten::native_layer_norm_backward",
                            "aten::gelu", "aten::gelu_backward", "aten::add", "aten::add_",
                            "aten::mul", "aten::mul_", "aten::silu", "aten::silu_backward",
                            "aten::embedding", "aten::index_select", "aten::rsqrt",
                            "aten::mean", "aten::pow", "aten::div", "aten::native_dropout",
                            "aten::neg", "aten::sum", "aten::cat"),
}


def profile_theirs(path: str, our_args: dict[str, Any], steps: int = 3,
                   warmup: int = 2) -> dict[str, Any]:
    """Seconds per step by category for llm-baselines' step (minillm_jax.experiments.
    versus_llm_baselines.build_their_step): self CPU time per op; everything inside the
    optimizer's step and the clipping counts as optimizer."""
    from torch.profiler import ProfilerActivity, profile

    from minillm_jax.experiments.versus_llm_baselines import build_their_step

    step, _, _ = build_their_step(path, our_args)
    for _ in range(warmup):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    totals = dict.fromkeys(CATEGORIES, 0.0)
    lookup = {op: cat for cat, ops in TORCH_CATEGORIES.items() for op in ops}
    for event in prof.events():  # self time: each child is visited on its own
        self_us = event.self_cpu_time_total
        if self_us <= 0:
            continue
        parents, node = [], event.cpu_parent
        while node is not None:
            parents.append(node.name)
            node = node.cpu_parent
        if any(p.startswith("Optimizer.step") or "clip_grad" in p for p in parents + [event.name]):
            category = "optimizer"
        elif any(p.startswith("aten::scaled_dot_product_attention") for p in parents):
            category = "attention"
        else:
            category = lookup.get(event.name, "rest")
        totals[category] += self_us / 1e6 / steps
    return {"categories": totals}


def format_table(ours: dict[str, float], theirs: dict[str, float] | None) -> str:
    """Markdown: ms per step by category (and the difference)."""
    if theirs is None:
        lines = ["| category | ours (ms/step) |", "|---|---|"]
        lines += [f"| {c} | {1000 * ours[c]:.0f} |" for c in CATEGORIES]
        lines.append(f"| **total** | {1000 * sum(ours.values()):.0f} |")
        return "\n".join(lines)
    lines = ["| category | ours (ms/step) | llm-baselines (ms/step) | ours - theirs |",
             "|---|---|---|---|"]
    for c in CATEGORIES:
        lines.append(f"| {c} | {1000 * ours[c]:.0f} | {1000 * theirs[c]:.0f} | "
                     f"{1000 * (ours[c] - theirs[c]):+.0f} |")
    to, tt = sum(ours.values()), sum(theirs.values())
    lines.append(f"| **total** | {1000 * to:.0f} | {1000 * tt:.0f} | {1000 * (to - tt):+.0f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from minillm_jax.config import ConfigError
    from minillm_jax.config.cli import parse_config_args, run_command

    parser = argparse.ArgumentParser(prog="python -m minillm_jax.experiments.step_profile",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="profiled steps")
    parser.add_argument("--warmup", type=int, default=2, help="unprofiled steps first")
    parser.add_argument("--llm-baselines", metavar="PATH", default=None,
                        help="an llm-baselines checkout: profile its step too")
    parser.add_argument("--top", type=int, default=0, help="also list our N slowest ops")
    args, c, _ = parse_config_args(parser, argv)

    def work() -> None:
        ours = profile_ours(c, args.steps, args.warmup)
        theirs = None
        if args.llm_baselines:
            from minillm_jax.experiments.versus_llm_baselines import check_comparable
            from minillm_jax.export.llm_baselines import args_for

            check_comparable(c)
            theirs = profile_theirs(args.llm_baselines, args_for(c)[0], args.steps,
                                    args.warmup)["categories"]
        print(format_table(ours["categories"], theirs))
        for name, seconds in sorted(ours["ops"].items(), key=lambda kv: -kv[1])[:args.top]:
            print(f"  {1000 * seconds:8.1f} ms  {name}")

    from minillm_jax.experiments.versus_llm_baselines import ComparisonError
    from minillm_jax.export.errors import ConversionError

    return run_command(work, (ConfigError, ComparisonError, ConversionError))


if __name__ == "__main__":
    sys.exit(main())
