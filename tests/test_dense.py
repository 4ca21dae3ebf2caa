"""The Dense layers' transposed-input weight gradient (minillm_jax/model/dense.py) equals
autodiff's, alone and in the model, and is chosen for CPUs only."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from minillm_jax.config import ExecutionConfig, base_defaults, resolve_dense_weight_grad
from minillm_jax.model.dense import dense_dot_general, dense_matmul


@pytest.mark.parametrize("c_in,c_out", [(24, 96), (96, 24), (32, 32)])  # both branches
def test_gradients_equal_autodiff_of_the_plain_product(c_in, c_out):
    x = jax.random.normal(jax.random.key(0), (3, 40, c_in))
    w = jax.random.normal(jax.random.key(1), (c_in, c_out)) * 0.2
    g = jax.random.normal(jax.random.key(2), (3, 40, c_out))
    # the reference: numpy's einsum in float64, no JAX transpose rule involved
    want_x = np.einsum("bto,io->bti", np.float64(g), np.float64(w))
    want_w = np.einsum("bti,bto->io", np.float64(x), np.float64(g))
    y, pullback = jax.vjp(jax.jit(dense_matmul), x, w)
    got_x, got_w = pullback(g)
    np.testing.assert_allclose(y, np.einsum("bti,io->bto", np.float64(x), np.float64(w)),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_x, want_x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_w, want_w, rtol=1e-5, atol=1e-5)
    assert got_w.dtype == w.dtype and np.std(want_w) > 1.0  # not a degenerate case


def test_other_contractions_pass_through_unchanged():
    a = jax.random.normal(jax.random.key(0), (5, 6))
    b = jax.random.normal(jax.random.key(1), (5, 7))
    dims = (((0,), (0,)), ((), ()))  # not Dense's form: plain lax.dot_general
    np.testing.assert_array_equal(dense_dot_general(a, b, dims),
                                  jax.lax.dot_general(a, b, dims))


def _execution(**overrides) -> ExecutionConfig:
    return ExecutionConfig(**overrides)  # configs/base.py's defaults for the rest


def test_auto_is_transposed_on_cpu_and_autodiff_on_accelerators():
    assert resolve_dense_weight_grad("auto", "cpu") == "transposed"
    for platform in ("gpu", "cuda", "rocm", "tpu"):
        assert resolve_dense_weight_grad("auto", platform) == "xla"
        assert _execution().for_platform(platform).dense_weight_grad == "xla"
    assert _execution(dense_weight_grad="transposed").for_platform("gpu").dense_weight_grad == \
        "transposed"  # an explicit choice is kept
    assert _execution().for_platform("cpu").dense_weight_grad == "transposed"


def test_bad_value_is_refused_in_one_line():
    from minillm_jax.config import ConfigError

    with pytest.raises(ConfigError) as err:
        _execution(dense_weight_grad="fast")
    assert "dense_weight_grad" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("model", ["gpt", "llama"])
def test_model_loss_and_gradients_equal_with_either_form(model):
    from minillm_jax.model.transformer import ModelConfig, Transformer

    cfg = ModelConfig.from_flat({**base_defaults(), **dict(
        model=model, n_layer=2, n_embd=32, n_head=2, sequence_length=16, vocab_size=97,
        dropout=0.0, bias=True)})
    idx = jax.random.randint(jax.random.key(3), (2, 16), 0, 97)
    params = None
    results = {}
    for form in ("xla", "transposed"):
        net = Transformer(cfg, _execution(dense_weight_grad=form))
        if params is None:
            params = net.init(jax.random.key(0), idx, train=False)["params"]
            params = jax.tree.map(  # every parameter noise, biases and norms included
                lambda p: p + 0.05 * jax.random.normal(jax.random.key(p.size), p.shape), params)

        def loss(p, net=net):
            logits = net.apply({"params": p}, idx, train=False)
            return jnp.mean(jax.nn.log_softmax(logits)[..., 0] ** 2)

        results[form] = jax.jit(jax.value_and_grad(loss))(params)
        uses_custom_rule = "custom_vjp_call" in str(jax.make_jaxpr(jax.grad(loss))(params))
        assert uses_custom_rule == (form == "transposed"), form
    (v1, g1), (v2, g2) = results["xla"], results["transposed"]
    assert float(v2) == pytest.approx(float(v1), rel=1e-6)
    kernels = [k for k in jax.tree_util.tree_leaves_with_path(g1) if "kernel" in str(k[0])]
    assert len(kernels) >= 4  # the Dense kernels (stacked over layers) are among them
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * float(jnp.max(jnp.abs(a))))
