"""Architecture options train and keep their invariants: MoE (top-1, top-2, dropless), Brainformer
blocks, weighted residuals (identity at init), scan vs unrolled, causality, sweep files."""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from minillm_jax.model import transformer as M
from minillm_jax.optim import decay_mask
from minillm_jax.train.step import TrainState, features, make_train_step
from tests.conftest import REPO, tiny_config
from tests.fast_compile import fast_init, fast_jit

SMALL = dict(n_layer=2, n_embd=32, n_head=2, vocab_size=64, sequence_length=16)
MOE = dict(block_pattern="attn,moe", moe_n_experts=4)
BRAINFORMER = "attn,moe,mlp,moe,mlp,moe"

# Options are combined so that few programs are compiled (compiling dominates CPU test time):
# every option trains below, and the MoE + weighted-residual llama also goes through the trainer.
# The gpt variant uses the fused output-layer loss (loss_chunk_size > 0, the features path).
VARIANTS = {
    "gpt_moe_top1_weighted_residual": dict(model="gpt", moe_top_k=1, weighted_residual=True,
                                           **MOE),
    "llama_brainformer_dropless": dict(model="llama", block_pattern=BRAINFORMER, moe_n_experts=4,
                                       moe_top_k=2, moe_capacity_factor=0.0, n_layer=1),
}


def _cfg(**kw):
    return M.ModelConfig(**{**SMALL, **kw})


def _logits_and_stats(model, params, x):
    f = features(model, params, x)
    return M.head_logits(f.hidden, f.head), f.stats


def _fixed_batch():
    tokens = jax.random.randint(jax.random.key(5), (4, 17), 0, 64)
    return {"x": tokens[None, :, :-1], "y": tokens[None, :, 1:]}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_trains_on_a_fixed_batch(name):
    cfg = _cfg(**VARIANTS[name])
    model = M.Transformer(cfg)
    tx = optax.adamw(1e-2, weight_decay=0.1, mask=decay_mask)
    chunk = 48 if cfg.model == "gpt" else 0
    params = fast_init(model)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                       rng=jax.random.key(1))
    batch = _fixed_batch()
    step = fast_jit(make_train_step(model, lambda horizon, step: (tx, lambda s: 1e-2),
                                    loss_chunk_size=chunk), state, batch, 12)
    losses = []
    for _ in range(12):
        state, metrics = step(state, batch, 12)
        losses.append(float(metrics["loss"]))
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0] - 0.5, losses
    assert float(metrics["loss_total"]) > float(metrics["loss"])  # aux + z losses added
    assert 0.9 < float(metrics["moe_aux_loss"]) < float(cfg.moe_n_experts)
    assert 0.0 <= float(metrics["moe_dropped_frac"]) < 1.0
    if cfg.moe_impl_resolved == "dropless":
        assert float(metrics["moe_dropped_frac"]) == 0.0
    if cfg.weighted_residual:  # learned below the mask, untouched (no gradient, no decay) above
        w = np.asarray(state.params["residual_weights"])
        assert w[0, 2] == 0.0  # j = 2 > r = 1
        assert np.any(np.abs(w - np.eye(2, 3, k=1)) > 1e-3)


def test_moe_weighted_residual_run_learns_and_logs_router_stats(tmp_path, shakespeare_dir,
                                                                capsys):
    """llama + MoE top-2 + weighted residual through trainer.train: loss falls, the parameter
    line shows active parameters, evals log the router statistics."""
    from minillm_jax.train.metrics import read_metrics
    from minillm_jax.train.trainer import train

    workdir = str(tmp_path / "moe")
    config = tiny_config(data_dir=shakespeare_dir, workdir=workdir, iterations=12, eval_freq=6,
                         batch_size=4, loss_chunk_size=0, log_freq=1, lr=3e-3,
                         block_pattern="attn,moe", moe_n_experts=4,
                         moe_top_k=2, weighted_residual=True)
    result = train(config)
    assert "active per token" in capsys.readouterr().out
    losses = [r["train_loss"] for r in read_metrics(workdir) if "train_loss" in r]
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.5, losses
    assert 0.5 < result["moe_aux_loss"] < 4 and 0 <= result["moe_dropped_frac"] < 1
    assert result["moe_z_loss"] > 0
    assert sum(result[f"moe_load_e{e}"] for e in range(4)) == pytest.approx(1.0, abs=1e-5)
    assert any("moe_aux_loss" in r and r.get("step") == 6 for r in read_metrics(workdir))


@pytest.mark.parametrize("name", ["gpt", "llama"])
def test_weighted_residual_is_the_plain_network_at_init(name):
    """Same parameters (the plain layout plus residual_weights) -> the same logits at init."""
    plain, weighted = M.Transformer(_cfg(model=name)), M.Transformer(
        _cfg(model=name, weighted_residual=True))
    w_params = fast_init(weighted)
    weights = w_params.pop("residual_weights")
    params = w_params  # exactly the plain model's parameter tree
    assert jax.tree.structure(params) == jax.tree.structure(M.abstract_params(plain))
    np.testing.assert_array_equal(weights, np.eye(2, 3, k=1))  # w[r-1, r] = 1
    assert not decay_mask({"residual_weights": weights})["residual_weights"]
    idx = jax.random.randint(jax.random.key(1), (2, 16), 0, 64)
    a = fast_jit(lambda p: plain.apply({"params": p}, idx), params)(params)
    w_params = {**params, "residual_weights": weights}
    weighted_fwd = fast_jit(lambda p: weighted.apply({"params": p}, idx), w_params)
    np.testing.assert_allclose(weighted_fwd({**params, "residual_weights": weights}), a,
                               rtol=0, atol=1e-6)
    # Entries above the diagonal (j > r) are masked out; below it they mix earlier outputs.
    masked = weighted_fwd({**params, "residual_weights": weights.at[0, 2].set(5.0)})
    np.testing.assert_allclose(masked, a, rtol=0, atol=1e-6)
    mixed = weighted_fwd({**params, "residual_weights": weights.at[1, 0].set(0.5)})
    assert not np.allclose(mixed, a)


def test_scan_and_unrolled_agree_and_token_priority_is_causal():
    """New blocks (Brainformer-style pattern, MoE with drops, weighted residual): scanned ==
    unrolled; with token-order priority (the default) dropping never looks at later tokens."""
    kw = dict(model="llama", block_pattern="attn,moe,mlp,moe", moe_n_experts=4,
              moe_capacity_factor=0.5, weighted_residual=True)
    scanned = M.Transformer(_cfg(**kw))
    unrolled = M.Transformer(_cfg(**kw), M.ExecutionConfig(scan_layers=False))
    params = fast_init(scanned)
    idx = jax.random.randint(jax.random.key(1), (2, 16), 0, 64)
    run = lambda m: fast_jit(  # noqa: E731
        lambda p, x: _logits_and_stats(m, p, x), params, idx)
    fwd = run(scanned)
    (a, sa), (b, sb) = fwd(params, idx), run(unrolled)(params, idx)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), sa, sb)
    assert float(sa["moe_dropped_frac"]) > 0.1
    changed, _ = fwd(params, idx.at[:, 10].set((idx[:, 10] + 1) % 64))
    np.testing.assert_allclose(a[:, :10], changed[:, :10], rtol=1e-6, atol=1e-6)
    assert not np.allclose(a[:, 10:], changed[:, 10:])


def _load_sweep(name):
    path = REPO / "configs" / "sweeps" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_test_sweep_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_sweep()


@pytest.mark.parametrize("name", ["width_depth", "scaling", "width_depth_demo"])
def test_sweep_files(name):
    sweep = _load_sweep(name)
    base, variants = sweep["base"], sweep["variants"]
    names = [v["name"] for v in variants]
    assert len(set(names)) == len(names) >= 3
    sizes = set()
    for variant in variants:
        config = base.copy_and_resolve_references()
        for key, value in variant.items():
            if key != "name":
                assert key in base, key
                config[key] = value
        cfg = M.ModelConfig.from_flat(config.to_dict())
        assert cfg.n_embd % cfg.n_head == 0
        params = M.abstract_params(M.Transformer(cfg))
        embed = cfg.vocab_size * cfg.n_embd + (2 * cfg.n_layer + 1) * cfg.n_embd  # + norms
        sizes.add(M.num_params(params, cfg) - embed)
        if name.startswith("width_depth"):
            assert M.num_params(params, cfg) - embed == 12 * cfg.n_embd ** 2 * cfg.n_layer
    if name.startswith("width_depth"):
        assert len(sizes) == 1  # equal non-embedding parameter count
    else:
        assert sorted(v["n_layer"] for v in variants) == [6, 8, 12, 18, 24]
