"""Our train step against llm-baselines' own PyTorch step, on the same machine, alternating.

    python tools/bench.py --compare-llm-baselines PATH [--config configs/bench_cpu.py] [--pairs 3]

PATH is an llm-baselines checkout (its `src/` holds `models/`, `config/`); nothing of it is
copied here. Each measurement runs in a fresh process (ours: the compiled train step of
minillm_jax.experiments.benchmark; theirs: their model from `models.utils.get_model`, their
command-line defaults from their own `config` parser, their weight-decay groups, and
torch.optim.AdamW + OneCycleLR as their `main.py` builds them, forward + backward + clip + step +
zero_grad as their training loop runs it), so neither runtime's thread pools or caches slow the
other. The pairs alternate which side goes first, so drift of the machine hits both alike.
Data loading is excluded on both sides (random tokens, the same batch every step).

The printed ratio is median over pairs of (their step time / our step time): above 1 we are
faster.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from minillm_jax.experiments.children import child_env

WORKER = "minillm_jax.experiments.versus_llm_baselines"


class ComparisonError(RuntimeError):
    """The comparison cannot run (not a checkout, a side failed); one line for the user."""


def check_checkout(path: str) -> Path:
    """PATH/src of an llm-baselines checkout, or ComparisonError saying what to pass."""
    src = Path(path) / "src"
    if not (src / "models").is_dir() or not (src / "config").is_dir():
        raise ComparisonError(f"{path} is not an llm-baselines checkout (no src/models and "
                              "src/config): pass the repository's root directory")
    return src


def llm_baselines_argv(args: dict[str, Any], known: set[str]) -> list[str]:
    """Their command line for `args` (our run's llm-baselines arguments), keeping only what
    their parser knows (LauzHack-era and later trees differ). `--bias False` would parse as True
    there (type=bool), so false booleans are left at their default (False)."""
    argv = ["--device", "cpu"]
    for key, value in args.items():
        if key not in known or key == "dataset":
            continue
        if isinstance(value, bool):
            if value:
                argv += [f"--{key}", "True"]
            continue
        argv += [f"--{key}", str(value)]
    return argv


def _their_args(our_args: dict[str, Any]) -> argparse.Namespace:
    """Their full argument namespace: their own parser's defaults plus our run's values."""
    import config as lb_config  # theirs: src/ is first on sys.path

    probe_parser = argparse.ArgumentParser(allow_abbrev=False)
    probe = lb_config.parse_args_with_format("base", probe_parser, [], argparse.Namespace())
    # argparse has no public accessor for an option's choices
    models = next((a.choices or [] for a in probe_parser._actions
                   if "--model" in a.option_strings), [])
    if our_args.get("model") == "llama2" and "llama2" not in models:
        our_args = {**our_args, "model": "llama"}  # later trees renamed it
    argv = llm_baselines_argv(our_args, set(vars(probe)))
    return lb_config.parse_args_with_format("base", argparse.ArgumentParser(allow_abbrev=False),
                                            argv, argparse.Namespace())


def build_their_step(path: str, our_args: dict[str, Any]):
    """(step(), model, optimizer) of llm-baselines at `path` for our run's arguments."""
    import inspect

    import tiktoken
    import torch

    from minillm_jax.data.tokenizer import get_tokenizer

    src = check_checkout(path)
    sys.path.insert(0, str(src))
    # Their models call tiktoken.get_encoding("gpt2") (a download); the vendored ranks are the
    # same encoding and are only used by their generate().
    tiktoken.get_encoding = lambda name: get_tokenizer(name)
    args = _their_args(our_args)
    from models.utils import get_model

    torch.manual_seed(args.seed)
    model = get_model(args).to("cpu")
    model.train()
    spec_fn = model.get_parameter_group_specs
    groups = spec_fn(config=args) if "config" in inspect.signature(spec_fn).parameters else spec_fn()
    named = dict(model.named_parameters())
    for group in groups:
        group["params"] = [named[name] for name in group["params"]]
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(args.beta1, args.beta2),
                            weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer=opt, max_lr=args.lr, total_steps=args.iterations, pct_start=args.warmup_percent,
        anneal_strategy="cos", cycle_momentum=False, div_factor=1e2, final_div_factor=.1)
    gen = torch.Generator().manual_seed(0)
    shape = (args.acc_steps, args.batch_size, args.sequence_length + 1)
    tokens = torch.randint(0, min(args.vocab_size, 50257), shape, generator=gen)
    x, y = tokens[..., :-1].contiguous(), tokens[..., 1:].contiguous()

    def step() -> float:
        for micro in range(args.acc_steps):
            outputs = model(x[micro], targets=y[micro])
            (outputs["loss"] / args.acc_steps).backward()
        if args.grad_clip != 0.0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        scheduler.step()
        opt.zero_grad(set_to_none=True)
        return float(outputs["loss"].detach())

    return step, model, opt


def _time_steps(step, steps: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return times


def _worker(config_args: list[str], path: str, steps: int, warmup: int) -> dict:
    """llm-baselines' step times, in this (fresh) process."""
    from minillm_jax.config.cli import parse_config_args

    _, c, _ = parse_config_args(argparse.ArgumentParser(), config_args)
    import torch

    from minillm_jax.export.llm_baselines import args_for

    our_args, _ = args_for(c)
    step, _, _ = build_their_step(path, our_args)
    return {"side": "theirs", "step_times_s": _time_steps(step, steps, warmup),
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def check_comparable(c: Any) -> None:
    """Refuses a config llm-baselines cannot run as the same model (one line per problem)."""
    from minillm_jax.config import build_config
    from minillm_jax.export.architectures import check_llm_baselines, lookup
    from minillm_jax.export.llm_baselines import FORMAT

    cfg = build_config(c, "compare").model
    check_llm_baselines(cfg)
    lookup(cfg, FORMAT)


def run_side(side: str, config_args: list[str], path: str, steps: int, warmup: int) -> dict:
    """Runs one side in a fresh Python process and returns its JSON result: ours is
    `python -m minillm_jax.experiments.benchmark --json`, theirs this module's worker."""
    if side == "ours":
        cmd = [sys.executable, "-m", "minillm_jax.experiments.benchmark", *config_args,
               "--steps", str(steps), "--warmup", str(warmup), "--json"]
    else:
        cmd = [sys.executable, "-m", WORKER, "--path", path, "--steps", str(steps),
               "--warmup", str(warmup), "--", *config_args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=child_env())
    if out.returncode != 0:
        raise ComparisonError(f"the {side} step failed (exit {out.returncode}):\n"
                              f"{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if side == "ours":
        result["threads"] = os.cpu_count()
    return result


def compare(path: str, config_args: list[str], pairs: int = 3, steps: int = 5, warmup: int = 2,
            run=run_side, echo=print) -> dict[str, Any]:
    """Alternating pairs of (ours, theirs); returns per-pair medians and the median ratio."""
    rows = []
    for pair in range(pairs):
        order = ("ours", "theirs") if pair % 2 == 0 else ("theirs", "ours")
        result = {side: run(side, config_args, path, steps, warmup) for side in order}
        ours = statistics.median(result["ours"]["step_times_s"])
        theirs = statistics.median(result["theirs"]["step_times_s"])
        rows.append({"pair": pair + 1, "first": order[0], "ours_s": ours, "theirs_s": theirs,
                     "ratio": theirs / ours})
        echo(f"pair {pair + 1} ({order[0]} first): ours {1000 * ours:.0f} ms/step, "
             f"llm-baselines {1000 * theirs:.0f} ms/step, ratio {theirs / ours:.3f}")
    ratio = statistics.median(r["ratio"] for r in rows)
    return {"pairs": rows, "ratio": ratio,
            "ours_threads": result["ours"]["threads"], "theirs_threads": result["theirs"]["threads"]}


def cpu_model() -> str:
    """The CPU's model name and the vector extensions that matter to matmuls."""
    name, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name == "unknown CPU":
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    wanted = ["avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]
    have = [f for f in wanted if f in flags]
    return f"{name} ({', '.join(have) or 'no AVX2'}; {os.cpu_count()} cores visible)"


def main_compare(path: str, config_args: list[str], pairs: int, steps: int, warmup: int) -> None:
    """Prints the side-by-side table and the ratio (benchmark's --compare-llm-baselines)."""
    from minillm_jax.config.cli import parse_config_args

    _, c, _ = parse_config_args(argparse.ArgumentParser(), config_args)
    check_checkout(path)
    check_comparable(c)
    print(f"machine: {cpu_model()}")
    print(f"config: {' '.join(config_args)}; {pairs} alternating pairs, median of {steps} steps "
          f"after {warmup} warm-up steps each, data loading excluded")
    r = compare(path, config_args, pairs, steps, warmup)
    tokens = c.batch_size * c.acc_steps * c.sequence_length
    ours = statistics.median(p["ours_s"] for p in r["pairs"])
    theirs = statistics.median(p["theirs_s"] for p in r["pairs"])
    print(f"ours:          {1000 * ours:.0f} ms/step, {tokens / ours:,.0f} tokens/s "
          f"(JAX {r['ours_threads']} cores)")
    print(f"llm-baselines: {1000 * theirs:.0f} ms/step, {tokens / theirs:,.0f} tokens/s "
          f"(torch, {r['theirs_threads']} threads)")
    print(f"speed ratio (their step time / ours, median of pairs): {r['ratio']:.2f}x")


def _worker_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {WORKER}")
    parser.add_argument("--path", required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("config_args", nargs="*")
    args = parser.parse_args(argv)
    result = _worker(args.config_args, args.path, args.steps, args.warmup)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
