"""A tiny learnable language-modelling problem shared by the optimizer tests.

A pure-jnp residual MLP language model with the same parameter layout as minillm_jax.model.transformer's
GPT (tied `wte` embedding, RMS-norm `scale`s, Dense `kernel`s stacked on a leading layer axis,
optionally an untied `lm_head`) compiles in well under a second, unlike the flax model, which
keeps these tests fast on shared CPUs. Sequences follow a fixed random permutation
(x[t+1] = perm[x[t]]), so the loss can fall from log(V) towards 0 within a few dozen steps.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

VOCAB, EMBD, HIDDEN, LAYERS, SEQ, BATCH = 64, 64, 128, 2, 16, 16
# XLA CPU options for the tests' jits: about 40% less compile time, which dominates here.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def fast_jit(fn, **kw):
    return jax.jit(fn, compiler_options=FAST_COMPILE, **kw)


def opt_config(**overrides) -> ml_collections.ConfigDict:
    """configs/base.py with short-run optimisation fields and `overrides`."""
    from minillm_jax.config import load_config

    config = load_config(Path(__file__).resolve().parents[2] / "configs" / "base.py")
    config.update(dict(iterations=40, lr=3e-3, warmup_percent=0.1, weight_decay=0.1))
    config.update(overrides)
    return config


def optimizer(config: ml_collections.ConfigDict):
    """(tx, schedule) of a flat test config, typed and checked first as the trainer does."""
    from minillm_jax.config import build_config
    from minillm_jax.optim import build_optimizer

    typed = build_config(config)
    return build_optimizer(typed.optim, typed.run.iterations)


def optim_config(config: ml_collections.ConfigDict):
    """The OptimConfig of a flat test config."""
    from minillm_jax.config import build_config

    return build_config(config).optim


def schedule_of(config: ml_collections.ConfigDict):
    """The lr schedule of a flat test config."""
    return optimizer(config)[1]


def init_params(seed: int = 0, untied: bool = False) -> dict:
    """Parameters drawn with numpy (eager jax.random would compile op by op)."""
    rng = np.random.default_rng(seed)

    def normal(std, *shape):
        return jnp.asarray(std * rng.standard_normal(shape), jnp.float32)

    params = {
        "wte": {"embedding": normal(0.1, VOCAB, EMBD)},
        "blocks": {
            "ln_1": {"scale": jnp.ones((LAYERS, EMBD))},
            "mlp": {"c_fc": {"kernel": normal(0.1, LAYERS, EMBD, HIDDEN)},
                    "c_proj": {"kernel": normal(0.02, LAYERS, HIDDEN, EMBD)}},
        },
        "ln_f": {"scale": jnp.ones((EMBD,))},
    }
    if untied:
        params["lm_head"] = {"kernel": normal(0.1, EMBD, VOCAB)}
    return params


def _rms(h):
    return h * jax.lax.rsqrt(jnp.mean(h * h, axis=-1, keepdims=True) + 1e-5)


def forward(params, x):
    h = params["wte"]["embedding"][x]
    blocks = params["blocks"]
    for layer in range(LAYERS):
        a = _rms(h) * blocks["ln_1"]["scale"][layer]
        a = jax.nn.gelu(a @ blocks["mlp"]["c_fc"]["kernel"][layer])
        h = h + a @ blocks["mlp"]["c_proj"]["kernel"][layer]
    h = _rms(h) * params["ln_f"]["scale"]
    head = params["lm_head"]["kernel"] if "lm_head" in params else params["wte"]["embedding"].T
    return h @ head


@functools.lru_cache(maxsize=None)
def problem(untied: bool = False, seed: int = 0):
    """(params, loss_fn) with a fixed batch."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(VOCAB)
    seq = [rng.integers(0, VOCAB, size=(BATCH,))]
    for _ in range(SEQ):
        seq.append(perm[seq[-1]])
    tokens = jnp.asarray(np.stack(seq, axis=1), jnp.int32)
    x, y = tokens[:, :-1], tokens[:, 1:]

    def loss_fn(p):
        logits = forward(p, x)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

    return init_params(seed, untied), loss_fn


def train(config: ml_collections.ConfigDict, steps: int | None = None, untied: bool = False):
    """(first loss, final loss, final params, final opt_state, final loss at
    eval_params(opt_state, params)) after `steps` updates (default config.iterations),
    all in one compiled scan."""
    from minillm_jax.optim import eval_params

    params, loss_fn = problem(untied)
    tx, _ = optimizer(config)
    steps = steps or config.iterations

    @fast_jit
    def run(params):
        def body(carry, _):
            p, s = carry
            loss, g = jax.value_and_grad(loss_fn)(p)
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), loss
        (p, s), losses = jax.lax.scan(body, (params, tx.init(params)), None, length=steps)
        return losses[0], loss_fn(p), p, s, loss_fn(eval_params(s, p))

    first, last, p, s, last_eval = run(params)
    return float(first), float(last), p, s, float(last_eval)
