"""Measures the numbers quoted in minillm_jax/optim/README.md.

    python -m minillm_jax.optim.measure            # state bytes (124M GPT) + loss comparison
    python -m minillm_jax.optim.measure --steps 300 \
        --opts adamw,adamw8bit,adamw8bit:adam8bit_stochastic_round=False,muon:lr=3e-3

1. Optimizer-state bytes for the 124M GPT (configs/base.py shapes) computed with jax.eval_shape
   (nothing is allocated), for every config.opt.
2. Loss after N steps of a small GPT (minillm_jax.model.transformer, 2 layers, n_embd 128, vocab 512) on a
   synthetic next-token task with a noise floor: x[t+1] = perm[x[t]] with probability 0.9, else
   uniform (entropy floor 0.947 nats). Fresh batches every step; the reported loss is the mean
   train loss of the last 20 steps.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from minillm_jax.config import (
    OPTIMIZERS, ConfigError, ModelConfig, OptimConfig, base_defaults, build_config)
from minillm_jax.model.losses import cross_entropy
from minillm_jax.model.transformer import Transformer, abstract_params, count_params, init_params
from minillm_jax.optim.factory import build_optimizer, optimizer_state_bytes


def state_bytes_table() -> dict[str, int]:
    params = abstract_params(Transformer(ModelConfig()))  # configs/base.py: the 124M GPT
    print(f"124M GPT: {count_params(params):,} parameters "
          f"({count_params(params) * 4 / 2**20:.1f} MiB float32)")
    table = {}
    for opt in OPTIMIZERS:
        table[opt] = optimizer_state_bytes(OptimConfig(opt=opt), params)
    for opt, n in table.items():
        print(f"  opt={opt:10s} state {n:>12,d} B = {n / 2**20:7.1f} MiB "
              f"({table['adamw'] / n:.2f}x smaller than adamw)")
    return table


def synthetic_batches(steps: int, batch: int, seq: int, vocab: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    perm = rng.permutation(vocab)
    n = steps * batch
    tok = np.empty((n, seq + 1), np.int64)
    tok[:, 0] = rng.integers(0, vocab, n)
    for t in range(seq):
        noise = rng.random(n) < 0.1
        tok[:, t + 1] = np.where(noise, rng.integers(0, vocab, n), perm[tok[:, t]])
    tok = jnp.asarray(tok.reshape(steps, batch, seq + 1), jnp.int32)
    return tok[..., :-1], tok[..., 1:]


def loss_curve(opt: str, steps: int, **overrides) -> tuple[float, float]:
    flat = {**base_defaults(), **dict(n_layer=2, n_embd=128, n_head=4, vocab_size=512,
                                      sequence_length=64, opt=opt, lr=3e-3, iterations=steps,
                                      warmup_percent=0.05), **overrides}
    config = build_config(flat)
    model = Transformer(config.model)
    params = init_params(model, jax.random.PRNGKey(0))
    xs, ys = synthetic_batches(steps, 16, config.model.sequence_length, config.model.vocab_size)
    tx, _ = build_optimizer(config.optim, steps)

    def loss_fn(p, x, y):
        return cross_entropy(model.apply({"params": p}, x, train=False), y).mean()

    @jax.jit
    def run(params, xs, ys):
        def body(carry, batch):
            p, s = carry
            loss, g = jax.value_and_grad(loss_fn)(p, *batch)
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), loss
        (p, _), losses = jax.lax.scan(body, (params, tx.init(params)), (xs, ys))
        return losses

    losses = np.asarray(run(params, xs, ys))
    return float(losses[0]), float(losses[-20:].mean())


def _parse(spec: str) -> tuple[str, dict]:
    """'opt:key=value:key=value' -> (opt, overrides) with values parsed as Python literals."""
    import ast

    opt, *pairs = spec.split(":")
    overrides = {}
    for pair in pairs:
        key, value = pair.split("=", 1)
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value
    return opt, overrides


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minillm_jax.optim.measure",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--opts", default="adamw,adamw8bit",
                        help="comma-separated opt[:field=value...] (config overrides)")
    parser.add_argument("--skip-bytes", action="store_true")
    args = parser.parse_args(argv)
    try:
        specs = [(spec, *_parse(spec)) for spec in args.opts.split(",")]
    except ValueError:
        parser.error(f"--opts {args.opts!r}: expected comma-separated opt[:field=value...]")
    from minillm_jax.config.cli import run_command

    def work() -> None:
        if not args.skip_bytes:
            state_bytes_table()
        print(f"small GPT, {args.steps} steps (mean train loss of the last 20 steps; "
              "floor 0.947):")
        for spec, opt, overrides in specs:
            t0 = time.perf_counter()
            try:
                first, last = loss_curve(opt, args.steps, **overrides)
            except ConfigError as err:
                raise ConfigError(f"{spec}: {err}") from None
            print(f"  {spec:45s} loss {first:.4f} -> {last:.4f} "
                  f"({time.perf_counter() - t0:.0f}s)", flush=True)

    return run_command(work, ConfigError)


if __name__ == "__main__":
    sys.exit(main())
