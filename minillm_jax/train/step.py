"""Pure train and eval steps: (state, batch) -> (state, metrics). Compiled once by the trainer."""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

from minillm_jax.model.losses import (cross_entropy, fused_linear_cross_entropy, hits_with_ties,
                                token_losses_and_hits)
from minillm_jax.model.transformer import Features, Transformer, head_logits, init_params
from minillm_jax.optim.plateau import current_lr

Array = jax.Array


@flax.struct.dataclass
class TrainState:
    """Everything a step changes. `rng` is the run's base key; step keys are fold_in(rng, step),
    so dropout masks depend only on (seed, step) and a resumed run draws the same ones."""

    step: Array
    params: Any
    opt_state: Any
    rng: Array


def features(model: Transformer, params: Any, x: Array, train: bool = False,
             rng: Array | None = None) -> Features:
    """The model's hidden states, output matrix and auxiliary losses for token ids x (B, T)."""
    rngs = {"dropout": rng} if rng is not None else {}
    return model.apply({"params": params}, x, train=train, rngs=rngs, method=Transformer.features)


def mean_cross_entropy(f: Features, targets: Array, loss_chunk_size: int,
                       softcap: float = 0.0) -> Array:
    """Mean next-token cross entropy; loss_chunk_size > 0 fuses the output layer with the loss
    over chunks of that many tokens (minillm_jax.model.losses): same value and gradients, without
    materialising the logits."""
    if loss_chunk_size > 0:
        c = f.hidden.shape[-1]
        return fused_linear_cross_entropy(f.hidden.reshape(-1, c), f.head, targets.reshape(-1),
                                          loss_chunk_size, softcap)
    return cross_entropy(head_logits(f.hidden, f.head, softcap), targets).mean()


Optimizer = Callable[[Array, Array],
                     tuple[optax.GradientTransformation, Callable[[Array], Array]]]


def make_train_step(model: Transformer, optimizer: Optimizer,
                    loss_chunk_size: int = 0) -> Callable:
    """Builds step(state, batch, horizon) for a batch {"x", "y"} of shape (acc_steps, B, T).

    `optimizer(horizon, step)` gives (tx, lr schedule) for an lr schedule `horizon` steps long
    whose lr at this update is schedule(step), step = state.step (minillm_jax.optim.build_optimizer
    with the run's OptimConfig): the lr logged is the lr applied, also after skipped steps. The
    horizon is an argument of the compiled step, so the time budget moves it without recompiling.

    Gradients of the acc_steps micro-batches are averaged (a scan, so memory is one micro-batch);
    the reported loss is their mean (llm-baselines logs the last micro-batch's loss).

    The objective is the cross entropy plus the model's auxiliary loss (MoE load-balancing and
    router z-losses; 0 for dense models). metrics["loss"] stays the plain cross entropy
    (comparable across models); models with auxiliary statistics also report "loss_total" (the
    optimised objective) and those statistics, all averaged over the micro-batches.
    """

    def loss_fn(params, x, y, rng):
        f = features(model, params, x, train=True, rng=rng)
        ce = mean_cross_entropy(f, y, loss_chunk_size, model.cfg.logit_softcap)
        objective = ce + f.aux_loss
        extra = {"loss_total": objective, **f.stats} if f.stats else {}
        return objective, {"loss": ce, **extra}

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(state: TrainState, batch: dict[str, Array], horizon: Array,
             ) -> tuple[TrainState, dict[str, Array]]:
        tx, schedule = optimizer(horizon, state.step)
        step_rng = jax.random.fold_in(state.rng, state.step)
        acc_steps = batch["x"].shape[0]

        def micro(carry, inputs):
            metric_sum, grad_sum = carry
            x, y, i = inputs
            (_, metrics), grads = grad_fn(state.params, x, y, jax.random.fold_in(step_rng, i))
            return (jax.tree.map(jnp.add, metric_sum, metrics),
                    jax.tree.map(jnp.add, grad_sum, grads)), None

        metric_shapes = jax.eval_shape(
            grad_fn, state.params, batch["x"][0], batch["y"][0], step_rng)[0][1]
        zeros = (jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metric_shapes),
                 jax.tree.map(jnp.zeros_like, state.params))
        (metric_sum, grad_sum), _ = jax.lax.scan(
            micro, zeros, (batch["x"], batch["y"], jnp.arange(acc_steps)))
        grads = jax.tree.map(lambda g: g / acc_steps, grad_sum)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {k: v / acc_steps for k, v in metric_sum.items()}
        grad_norm = optax.tree.norm(grads)
        # A non-finite loss or gradient applies no update: parameters and optimizer state stay
        # as they were (bitwise), the step counter still advances, and the loop decides what
        # else to do (minillm_jax/train/loop.py). optax.apply_if_finite looks at gradients only
        # and changes the optimizer state's layout (existing checkpoints would no longer restore).
        finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
        params, opt_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old),
                                         (params, opt_state), (state.params, state.opt_state))
        metrics.update(grad_norm=grad_norm, skipped=1.0 - finite.astype(jnp.float32),
                       # the applied lr: schedule x reduce-on-plateau scale (1 without plateau)
                       lr=current_lr(state.opt_state, schedule, state.step))
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return step


def make_eval_step(model: Transformer, loss_chunk_size: int = 0) -> Callable:
    """eval(params, batch{"x","y","mask"}) -> sums of loss, correct predictions and tokens.

    Forward only and deterministic (no dropout, including attention dropout, unlike
    llm-baselines' eval). loss_chunk_size > 0 computes the output layer, loss and accuracy over
    chunks of that many tokens (minillm_jax.model.losses.token_losses_and_hits), as training does.
    Accuracy is argmax over all vocab_size logits, as in llm-baselines; a tie for the largest
    logit is a miss (a uniform model scores 0, not 100%). Models with auxiliary
    statistics (MoE: moe_aux_loss, moe_z_loss, moe_dropped_frac, moe_load_e0..) also return
    them per batch; the Evaluator averages them over batches. They cover every token of the
    batch, padding included.
    """

    def step(params: Any, batch: dict[str, Array]) -> dict[str, Array]:
        f = features(model, params, batch["x"])
        mask = batch["mask"].astype(jnp.float32)
        if loss_chunk_size > 0:
            c = f.hidden.shape[-1]
            loss, correct = token_losses_and_hits(f.hidden.reshape(-1, c), f.head,
                                                  batch["y"].reshape(-1), loss_chunk_size,
                                                  model.cfg.logit_softcap)
            loss, correct = loss.reshape(mask.shape), correct.reshape(mask.shape)
        else:
            logits = head_logits(f.hidden, f.head, model.cfg.logit_softcap)
            loss = cross_entropy(logits, batch["y"])
            logits = logits.astype(jnp.float32)
            row_max = jnp.max(logits, axis=-1)
            target = jnp.take_along_axis(logits, batch["y"][..., None], axis=-1)[..., 0]
            correct = hits_with_ties(jnp.exp(logits - row_max[..., None]), target, row_max)
        return {"loss_sum": jnp.sum(loss * mask), "correct_sum": jnp.sum(correct * mask),
                "tokens": jnp.sum(mask), **f.stats}

    return step


def init_state(model: Transformer, tx: optax.GradientTransformation, seed: int) -> TrainState:
    """A fresh state: params from key(seed) split 'params', dropout base key from the other half."""
    param_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(seed))
    params = init_params(model, param_rng)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=dropout_rng)
