"""python -m minillm_jax.evaluate and python -m minillm_jax.sample on a tiny checkpoint."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from minillm_jax.train import checkpointing
from minillm_jax import config as config_lib
from minillm_jax import evaluate
from tests.conftest import REPO, tiny_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, shakespeare_dir):
    """A params-only checkpoint of the tiny model (random weights: nothing is compiled)."""
    from minillm_jax.model.transformer import abstract_params, build_model

    workdir = str(tmp_path_factory.mktemp("run"))
    config = config_lib.build_config(tiny_config(data_dir=shakespeare_dir, workdir=workdir))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: (0.02 * rng.normal(size=s.shape)).astype(s.dtype),
                          abstract_params(build_model(config.model)))
    checkpointing.save_params(workdir, config, params, step=12)
    return workdir


@pytest.fixture(scope="module")
def small_data(tmp_path_factory, shakespeare_dir):
    """The prepared corpus with only its first 1024 validation tokens (a quick full eval)."""
    out = tmp_path_factory.mktemp("small")
    meta = json.load(open(os.path.join(shakespeare_dir, "meta.json")))
    meta["val"] = {"tokens": 1024, "bytes": 3300, "documents": 1}
    (out / "meta.json").write_text(json.dumps(meta))
    shutil.copy(os.path.join(shakespeare_dir, "train.bin"), out / "train.bin")
    val = np.fromfile(os.path.join(shakespeare_dir, "val.bin"), np.uint16)[:1024]
    val.tofile(out / "val.bin")
    return str(out)


@pytest.fixture(scope="module")
def cli_runs(run_dir, small_data):
    """Both CLIs, run side by side (each one is mostly interpreter start-up and compiling)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    commands = {
        "evaluate": ["--workdir", run_dir, "--data", small_data],
        "sample": ["--workdir", run_dir, "--prompt", "ROMEO:", "--max-new-tokens", "6",
                   "--temperature", "0.9", "--top-k", "50", "--seed", "0", "--num-samples", "2"],
    }
    procs = {name: subprocess.Popen([sys.executable, "-m", f"minillm_jax.{name}", *args],
                                    cwd=REPO, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
             for name, args in commands.items()}
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        results[name] = (proc.returncode, out, err)
    return results


def test_evaluate_cli(cli_runs, small_data):
    returncode, stdout, stderr = cli_runs["evaluate"]
    assert returncode == 0, stderr[-3000:]
    assert "INFO" not in stderr  # orbax's per-file logging is silenced
    lines = stdout.strip().splitlines()
    assert lines[0].startswith("step 12 | val loss ")
    result = json.loads(lines[-1])
    assert result["step"] == 12 and result["data_dir"] == small_data
    assert result["val_tokens"] == (1024 - 1) // 32 * 32  # the whole (small) validation set
    assert 10.0 < result["val_loss"] < 11.5  # random weights: about ln(50304)
    assert result["val_perplexity"] == pytest.approx(math.exp(result["val_loss"]))
    assert 0 <= result["val_acc"] < 0.05
    assert result["val_bpb"] == pytest.approx(result["val_loss"] / math.log(2) * 1024 / 3300)


def test_evaluate_cli_errors(run_dir, tmp_path, capsys):
    assert evaluate.main(["--workdir", run_dir, "--step", "99"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no checkpoint for step 99 in") and "steps: [12]" in err
    assert evaluate.main(["--workdir", str(tmp_path / "nothing")]) == 2
    assert "error: no checkpoint in" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "nothing")  # reading creates nothing


def test_sample_cli(cli_runs):
    returncode, stdout, stderr = cli_runs["sample"]
    assert returncode == 0, stderr[-3000:]
    assert "INFO" not in stderr
    samples = stdout.split("-" * 40 + "\n")
    assert len(samples) == 2 and all(s.startswith("ROMEO:") for s in samples)
    assert all(len(s.strip()) > len("ROMEO:") for s in samples)


def test_accuracy_counts_a_tie_as_a_miss():
    """A uniform model (all logits equal) must not score 100%: a hit needs the target's logit to
    be the row's only largest one (numpy reference here), on constant and on tied logits."""
    import jax.numpy as jnp
    import numpy as np

    from minillm_jax.model.losses import token_losses_and_hits

    rng = np.random.default_rng(0)
    vocab, width = 12, 8
    hidden = rng.normal(size=(6, width)).astype(np.float32)
    row = rng.normal(size=(width,)).astype(np.float32)
    uniform_head = np.tile(row, (vocab, 1))  # every logit of a row equal (and not zero)
    targets = np.array([0, 3, 5, 7, 11, 2], np.int32)
    for chunk in (0, 4):
        _, hits = token_losses_and_hits(jnp.asarray(hidden), jnp.asarray(uniform_head),
                                        jnp.asarray(targets), chunk)
        np.testing.assert_array_equal(np.asarray(hits), np.zeros(6))

    head = rng.normal(size=(vocab, width)).astype(np.float32)
    best = (hidden @ head.T).argmax(-1)
    head[(best[0] + 1) % vocab] = head[best[0]]  # row 0's best token now ties with another
    logits = hidden @ head.T
    best = logits.argmax(-1)
    targets = np.array([best[0], best[1], (best[2] + 1) % vocab, best[3], best[4], best[5]],
                       np.int32)
    _, hits = token_losses_and_hits(jnp.asarray(hidden), jnp.asarray(head),
                                    jnp.asarray(targets), 0)
    expected = [float(logits[i, t] == logits[i].max() and np.sum(logits[i] == logits[i].max())
                      == 1) for i, t in enumerate(targets)]
    np.testing.assert_array_equal(np.asarray(hits), expected)
    assert expected[0] == 0.0 and sum(expected) >= 3  # the tie missed, clear maxima hit


@pytest.mark.parametrize("loss_chunk_size", [0, 64])
def test_uniform_model_scores_zero_not_100_percent(loss_chunk_size):
    """A model whose output rows are all equal (tied embedding with every row the same) predicts
    nothing: both eval paths (plain logits, chunked) give accuracy 0."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from minillm_jax.config import build_config
    from minillm_jax.model.transformer import build_model, init_params
    from minillm_jax.train.step import make_eval_step

    config = build_config(tiny_config(tie_embeddings=True))
    model = build_model(config.model)
    params = init_params(model, jax.random.PRNGKey(0))
    wte = params["wte"]["embedding"]
    params["wte"]["embedding"] = jnp.tile(wte[7:8], (wte.shape[0], 1))  # not zero: row 7
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.integers(0, 50257, size=(2, 32)), jnp.int32)
    batch = {"x": x, "y": jnp.roll(x, -1, axis=1), "mask": jnp.ones((2, 32), jnp.float32)}
    sums = jax.jit(make_eval_step(model, loss_chunk_size))(params, batch)
    accuracy = float(sums["correct_sum"]) / float(sums["tokens"])
    assert accuracy == 0.0
    assert float(sums["loss_sum"]) / 64 == pytest.approx(np.log(config.model.vocab_size),
                                                         rel=1e-5)
