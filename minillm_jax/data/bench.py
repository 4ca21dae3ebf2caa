"""Data pipeline throughput: loader tokens/s and prepare MB/s.

    python -m minillm_jax.data.bench DATA_DIR [--batch-size 66] [--seq-len 512] [--steps 2000]

DATA_DIR is a prepared directory; if it holds none, the vendored shakespeare corpus is prepared
into it first. Prepare throughput is measured by preparing shakespeare into a temporary directory
(in-process, and with a process pool when more than one core is available). tools/bench_data.py
runs this module.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Sequence

# Light imports only: tokenizer worker processes (spawn) re-import the main script, and the loader
# (grain, hence jax) would add seconds to each worker's start-up.
from minillm_jax.data import DataError, ensure_dataset, is_prepared, load_meta
from minillm_jax.data.prepare import _cpu_count, prepare_dataset


def bench_loader(data_dir: str, *, batch_size: int, seq_len: int, steps: int, mode: str,
                 prefetch: int, acc_steps: int = 1) -> float:
    from minillm_jax.data.loader import TrainLoader
    loader = TrainLoader(data_dir, batch_size=batch_size, seq_len=seq_len, seed=1337,
                         mode=mode, prefetch=prefetch, acc_steps=acc_steps)
    for _ in range(20):  # warm-up: threads, first permutation, page cache
        next(loader)
    start = time.perf_counter()
    for _ in range(steps):
        batch = next(loader)
    seconds = time.perf_counter() - start
    loader.close()
    assert batch["x"].shape == (acc_steps, batch_size, seq_len)
    return steps * acc_steps * batch_size * seq_len / seconds


def bench_prepare(num_proc: int) -> tuple[float, float, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        meta = prepare_dataset("shakespeare", tmp, num_proc=num_proc, progress=False)
        wall = time.perf_counter() - start
    mb = (meta["train"]["bytes"] + meta["val"]["bytes"]) / 1e6
    return mb / wall, wall, meta


def run(args: argparse.Namespace) -> None:
    if not is_prepared(args.data_dir):
        print(f"{args.data_dir} holds no prepared data: preparing shakespeare into it",
              file=sys.stderr)
        ensure_dataset("shakespeare", args.data_dir)
    meta = load_meta(args.data_dir)
    print(f"data: {args.data_dir} ({meta.get('dataset')}): train {meta['train']['tokens']:,} "
          f"tokens, val {meta['val']['tokens']:,} tokens | {_cpu_count()} CPU cores")
    shape = f"batch {args.batch_size} x {args.seq_len}"
    for mode, prefetch in (("baselines", 2), ("baselines", 0), ("random", 2)):
        rate = bench_loader(args.data_dir, batch_size=args.batch_size, seq_len=args.seq_len,
                            steps=args.steps, mode=mode, prefetch=prefetch)
        print(f"loader {mode:9s} prefetch={prefetch}: {rate / 1e6:7.1f} M tokens/s ({shape})")

    if not args.skip_prepare:
        procs = [1] + ([_cpu_count()] if _cpu_count() > 1 else [])
        for num_proc in procs:
            rate, wall, pmeta = bench_prepare(num_proc)
            print(f"prepare shakespeare num_proc={num_proc}: {rate:6.2f} MB/s end to end "
                  f"({wall:.2f} s wall incl. tokenizer load{' and pool start' if num_proc > 1 else ''}; "
                  f"{pmeta['prepare']['mb_per_s']:.2f} MB/s as reported) | train "
                  f"{pmeta['train']['tokens']:,} tokens / {pmeta['train']['bytes']:,} bytes, val "
                  f"{pmeta['val']['tokens']:,} tokens / {pmeta['val']['bytes']:,} bytes")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m minillm_jax.data.bench",
                                description=__doc__.splitlines()[0])
    p.add_argument("data_dir")
    p.add_argument("--batch-size", type=int, default=66)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--skip-prepare", action="store_true")
    args = p.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the loader needs no accelerator
    from minillm_jax.config.cli import run_command

    return run_command(lambda: run(args), DataError)


if __name__ == "__main__":
    sys.exit(main())
