"""Generate text from a checkpoint.

    python -m minillm_jax.sample --workdir runs/demo --prompt "ROMEO:" [--step N]
        [--max-new-tokens 40] [--temperature 0.9] [--top-k 50] [--seed 0] [--num-samples 1]

Temperature 0 is greedy decoding; --top-k 0 samples from the whole vocabulary. The same seed
gives the same text. This is the command line; the library is minillm_jax.model.generation (`generate`:
one prefill of the prompt, then one token per step from a KV cache; the context is the last
sequence_length tokens).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minillm_jax.sample",
                                     description=__doc__.strip().splitlines()[0])
    parser.add_argument("--workdir", required=True, help="the run directory (holds checkpoints/)")
    parser.add_argument("--prompt", default="Once upon a time")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default newest)")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--temperature", type=float, default=0.9)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-samples", type=int, default=1)
    args = parser.parse_args(argv)
    if args.max_new_tokens < 0 or args.temperature < 0 or args.top_k < 0 or args.num_samples < 1:
        parser.error("--max-new-tokens, --temperature and --top-k must be >= 0, --num-samples >= 1")
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    from minillm_jax.train import checkpointing
    from minillm_jax.train import rundir
    from minillm_jax.model.transformer import build_model
    from minillm_jax.model.generation import generate

    from minillm_jax.config.cli import run_command

    def work() -> None:
        config, params, step = checkpointing.load_params(args.workdir, args.step)
        if args.top_k > config.model.vocab_size:
            parser.error(f"--top-k {args.top_k} is larger than the vocabulary "
                         f"({config.model.vocab_size})")
        model = build_model(config.model)
        print(f"# {rundir.step_dir(args.workdir, step)}", file=sys.stderr)
        for i in range(args.num_samples):
            if i:
                print("-" * 40)
            print(generate(model, params, args.prompt, max_new_tokens=args.max_new_tokens,
                           temperature=args.temperature, top_k=args.top_k, seed=args.seed + i),
                  flush=True)

    return run_command(work, checkpointing.CheckpointError)


if __name__ == "__main__":
    sys.exit(main())
