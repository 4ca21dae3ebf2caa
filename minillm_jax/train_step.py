"""Pure train and eval steps: (state, batch) -> (state, metrics). Compiled once by the trainer."""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

from minillm_jax.losses import cross_entropy, fused_linear_cross_entropy
from minillm_jax.optim.plateau import current_lr

Array = jax.Array


def _has_moe(model: Any) -> bool:
    return bool(getattr(getattr(model, "cfg", None), "has_moe", False))


def apply_with_stats(model: Any, variables: dict, x: Array, **kwargs: Any) -> tuple[Any, dict]:
    """model.apply, plus the summed MoE router statistics (minillm_jax.moe.collect_stats) of a
    model with MoE sublayers (collected from the sown "intermediates"); {} for dense models."""
    if not _has_moe(model):
        return model.apply(variables, x, **kwargs), {}
    from minillm_jax.moe import collect_stats

    out, state = model.apply(variables, x, mutable=["intermediates"], **kwargs)
    return out, collect_stats(state.get("intermediates", {}))


@flax.struct.dataclass
class TrainState:
    """Everything a step changes. `rng` is the run's base key; step keys are fold_in(rng, step),
    so dropout masks depend only on (seed, step) and a resumed run draws the same ones."""

    step: Array
    params: Any
    opt_state: Any
    rng: Array


def make_train_step(model: Any, tx: optax.GradientTransformation,
                    schedule: Callable[[Array], Array], loss_chunk_size: int = 0) -> Callable:
    """Builds step(state, batch) for a batch {"x", "y"} of shape (acc_steps, B, T).

    Gradients of the acc_steps micro-batches are averaged (a scan, so memory is one micro-batch);
    the reported loss is their mean (llm-baselines logs the last micro-batch's loss).
    loss_chunk_size > 0 fuses the output layer with the loss over chunks of that many tokens
    (minillm_jax.losses): same loss and gradients, without materialising the logits.

    Mixture-of-experts models (model.cfg.has_moe) minimise cross entropy + moe_aux_loss_weight *
    (load-balancing loss summed over MoE layers) + moe_z_loss_weight * (router z-loss summed over
    MoE layers). metrics["loss"] stays the plain cross entropy (comparable with dense runs);
    metrics["loss_total"] is the optimised objective, and moe_aux_loss / moe_z_loss /
    moe_dropped_frac are per-layer means (minillm_jax.moe.eval_metrics), all averaged over the
    micro-batches.
    """
    cfg = getattr(model, "cfg", None)
    moe = _has_moe(model)

    def loss_fn(params, x, y, rng):
        variables, rngs = {"params": params}, {"dropout": rng}
        if loss_chunk_size > 0:
            (hidden, head), stats = apply_with_stats(
                model, variables, x, train=True, rngs=rngs, return_hidden=True)
            ce = fused_linear_cross_entropy(
                hidden.reshape(-1, hidden.shape[-1]), head, y.reshape(-1), loss_chunk_size)
        else:
            logits, stats = apply_with_stats(model, variables, x, train=True, rngs=rngs)
            ce = cross_entropy(logits, y).mean()
        if not moe:
            return ce, {}
        total = (ce + cfg.moe_aux_loss_weight * stats["aux_loss_sum"]
                 + cfg.moe_z_loss_weight * stats["z_loss_sum"])
        aux = {"loss": ce, "loss_total": total, "moe_aux_loss": stats["aux_loss"],
               "moe_z_loss": stats["z_loss"], "moe_dropped_frac": stats["dropped_frac"]}
        return total, aux

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(state: TrainState, batch: dict[str, Array]) -> tuple[TrainState, dict[str, Array]]:
        step_rng = jax.random.fold_in(state.rng, state.step)
        acc_steps = batch["x"].shape[0]

        def micro(carry, inputs):
            loss_sum, extra_sum, grad_sum = carry
            x, y, i = inputs
            (loss, extra), grads = grad_fn(state.params, x, y, jax.random.fold_in(step_rng, i))
            if moe:
                loss = extra["loss"]  # report the plain cross entropy
            return (loss_sum + loss, jax.tree.map(jnp.add, extra_sum, extra),
                    jax.tree.map(jnp.add, grad_sum, grads)), None

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        extra_zeros = ({k: jnp.zeros((), jnp.float32) for k in
                        ("loss", "loss_total", "moe_aux_loss", "moe_z_loss", "moe_dropped_frac")}
                       if moe else {})
        (loss_sum, extra_sum, grad_sum), _ = jax.lax.scan(
            micro, (jnp.zeros((), jnp.float32), extra_zeros, zeros),
            (batch["x"], batch["y"], jnp.arange(acc_steps)))
        grads = jax.tree.map(lambda g: g / acc_steps, grad_sum)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss_sum / acc_steps, "grad_norm": optax.tree.norm(grads),
                   # the applied lr: schedule x reduce-on-plateau scale (1 without plateau)
                   "lr": current_lr(state.opt_state, schedule, state.step)}
        metrics.update({k: v / acc_steps for k, v in extra_sum.items() if k != "loss"})
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return step


def make_eval_step(model: Any) -> Callable:
    """eval(params, batch{"x","y","mask"}) -> sums of loss, correct predictions and tokens.

    Deterministic (no dropout, including attention dropout, unlike llm-baselines' eval).
    Accuracy is argmax over all vocab_size logits, as in llm-baselines.
    MoE models also return per-batch router statistics (minillm_jax.moe.eval_metrics:
    moe_aux_loss, moe_z_loss, moe_dropped_frac, moe_load_e0..), which the Evaluator averages
    over batches. They cover every token of the batch, padding included.
    """

    def step(params: Any, batch: dict[str, Array]) -> dict[str, Array]:
        logits, stats = apply_with_stats(model, {"params": params}, batch["x"], train=False)
        mask = batch["mask"].astype(jnp.float32)
        loss = cross_entropy(logits, batch["y"])
        correct = (jnp.argmax(logits, axis=-1) == batch["y"]).astype(jnp.float32)
        out = {"loss_sum": jnp.sum(loss * mask), "correct_sum": jnp.sum(correct * mask),
               "tokens": jnp.sum(mask)}
        if stats:
            from minillm_jax.moe import eval_metrics

            out.update(eval_metrics(stats))
        return out

    return step


def init_state(model: Any, tx: optax.GradientTransformation, seed: int) -> TrainState:
    """A fresh state: params from key(seed) split 'params', dropout base key from the other half."""
    from minillm_jax.model import init_params

    param_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(seed))
    params = init_params(model, param_rng)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=dropout_rng)
