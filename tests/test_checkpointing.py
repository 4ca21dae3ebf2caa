"""Checkpoints: bitwise round trip, keep policies, unreadable and mismatched checkpoints, write
failures, resume=False refusal, metrics trimming. No training here (see tests/test_resume.py)."""

from __future__ import annotations

import gc
import glob
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from minillm_jax.train import checkpointing
from minillm_jax.train import rundir
from minillm_jax import config as config_lib
from minillm_jax.train.checkpointing import CheckpointError, CheckpointWarning
from minillm_jax.train.run_checkpoints import RunCheckpoints
from minillm_jax.config import ConfigError
from minillm_jax.train.step import TrainState
from tests.conftest import REPO, tiny_config


def _bits(x) -> np.ndarray:
    x = np.asarray(jax.device_get(x))
    return x.view(f"u{x.dtype.itemsize}") if x.dtype.kind in "fiu" else x


def assert_bitwise(a, b) -> None:
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(_bits(x), _bits(y))


def toy_state(step: int = 3, seed: int = 0, n: int = 256) -> TrainState:
    """A small TrainState with a non-trivial adamw state (no model compile)."""
    rng = np.random.default_rng(seed)
    params = {"w": jnp.asarray(rng.normal(size=(n, n)), jnp.float32),
              "b": jnp.asarray(rng.normal(size=(n,)), jnp.float32)}
    tx = optax.adamw(1e-3)
    opt_state = tx.init(params)
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
    _, opt_state = tx.update(grads, opt_state, params)
    return TrainState(step=jnp.asarray(step, jnp.int32), params=params, opt_state=opt_state,
                      rng=jax.random.PRNGKey(seed + 17))


def abstract(state: TrainState) -> TrainState:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)


TOY_CONFIG = tiny_config()  # any valid run config: it is saved beside the toy state


def save_toy(workdir, steps, keep=3, **kw) -> dict[int, TrainState]:
    ckpts = RunCheckpoints(str(workdir), keep=keep, **kw)
    states = {}
    for step in steps:
        states[step] = toy_state(step, seed=step)
        ckpts.save(step, states[step], {"micro_batch": step * 2}, TOY_CONFIG)
    ckpts.close()
    return states


@pytest.fixture(scope="module")
def model_state():
    """A TrainState of the tiny model (params, adamw moments, count, step, rng) filled with
    random values: realistic structure and dtypes without compiling anything."""
    from minillm_jax.model.transformer import build_model
    from minillm_jax.optim import build_optimizer
    from minillm_jax.train.step import init_state

    config = config_lib.build_config(tiny_config(dropout=0.1))
    tx, _ = build_optimizer(config.optim, config.run.iterations)
    shapes = jax.eval_shape(lambda: init_state(build_model(config.model), tx, seed=0))
    rng = np.random.default_rng(0)

    def fill(x):
        if jnp.issubdtype(x.dtype, jnp.floating):
            return jnp.asarray(rng.normal(size=x.shape).astype(x.dtype))
        return jnp.asarray(rng.integers(0, 1 << 30, size=x.shape).astype(x.dtype))

    return config, jax.tree.map(fill, shapes)


def test_round_trip_is_bitwise_even_after_donation(tmp_path, model_state):
    config, state = model_state
    host_copy = jax.device_get(state)
    live = jax.tree.map(jnp.copy, state)
    data_state = {"version": 1, "micro_batch": 44, "seed": 1337}
    ckpts = RunCheckpoints(str(tmp_path), keep=2)
    ckpts.save(11, live, data_state, config)
    # the training loop donates the state to the next step right after save() returns
    jax.jit(lambda s: jax.tree.map(lambda x: x + 1, s), donate_argnums=0)(live)
    ckpts.close()
    assert os.path.isdir(os.path.join(tmp_path, "checkpoints", "11", "fingerprint"))

    restored, restored_data, step = RunCheckpoints(str(tmp_path)).restore_latest(
        abstract(state), config)
    assert step == 11 and restored_data == data_state
    assert_bitwise(restored.params, host_copy.params)
    assert_bitwise(restored.opt_state, host_copy.opt_state)
    assert_bitwise((restored.step, restored.rng), (host_copy.step, host_copy.rng))
    saved_config, _ = checkpointing.load_config(str(tmp_path))
    assert saved_config.to_dict() == config.to_dict()
    # load_params (CLIs, converters) reads the same params
    _, params, step = checkpointing.load_params(str(tmp_path))
    assert step == 11
    assert_bitwise(params, host_copy.params)


_OTHER_DEVICES = textwrap.dedent("""
    import dataclasses, sys, jax, numpy as np
    from minillm_jax.train import checkpointing
    from minillm_jax.train import rundir
    from minillm_jax.train.build import build_run
    from minillm_jax.train.run_checkpoints import RunCheckpoints
    config, _ = checkpointing.load_config(sys.argv[1])
    config = config.replace(execution=dataclasses.replace(config.execution, mesh_fsdp=2))
    run = build_run(config)
    state, data_state, step = RunCheckpoints(sys.argv[1]).restore_latest(
        run.abstract_state, config)
    wte = state.params["wte"]["embedding"]
    assert len(wte.sharding.device_set) == 4 and not wte.sharding.is_fully_replicated
    expected = np.load(sys.argv[2])
    np.testing.assert_array_equal(np.asarray(wte).view(np.uint32), expected.view(np.uint32))
    print("RESTORED", step, jax.device_count())
""")


def test_restore_onto_four_devices(tmp_path, model_state):
    """A checkpoint written on one device restores onto a 2x2 (data, fsdp) mesh (fingerprints
    are checked on the sharded arrays)."""
    config, state = model_state
    ckpts = RunCheckpoints(str(tmp_path / "run"))
    ckpts.save(11, state, None, config)
    ckpts.close()
    np.save(tmp_path / "wte.npy", np.asarray(state.params["wte"]["embedding"]))
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", _OTHER_DEVICES, str(tmp_path / "run"),
                           str(tmp_path / "wte.npy")], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RESTORED 11 4" in proc.stdout


def test_keep_newest_and_best(tmp_path):
    ckpts = RunCheckpoints(str(tmp_path), keep=2, keep_best=True)
    for step, val_loss in [(1, 5.0), (2, 1.0), (3, 4.0), (4, None), (5, 3.0), (6, None)]:
        metrics = None if val_loss is None else {"val_loss": val_loss}
        ckpts.save(step, toy_state(step, n=8), None, TOY_CONFIG, metrics=metrics)
        ckpts.wait()
    ckpts.close()
    kept = sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit())
    assert kept == [2, 5, 6]  # the best (val loss 1.0) and the newest two
    again = RunCheckpoints(str(tmp_path), keep=2, keep_best=True)
    assert again.latest_step() == 6  # resume continues from the newest, not the best


def _garble(path: str) -> None:
    data = bytearray(open(path, "rb").read())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0x5A for b in data[middle:middle + 64])
    open(path, "wb").write(bytes(data))


def _largest_file(directory: str) -> str:
    files = [p for p in glob.glob(os.path.join(directory, "**", "*"), recursive=True)
             if os.path.isfile(p)]
    return max(files, key=os.path.getsize)


# orbax leaves the other read coroutines of a failed restore to the garbage collector
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("damage", ["flip bytes in params", "truncate params", "garble config"])
def test_unreadable_newest_checkpoint_falls_back(tmp_path, damage):
    states = save_toy(tmp_path, [5, 10])
    newest = os.path.join(tmp_path, "checkpoints", "10")
    if damage == "flip bytes in params":  # orbax reads this silently; the fingerprint catches it
        _garble(_largest_file(os.path.join(newest, "params")))
    elif damage == "truncate params":
        path = _largest_file(os.path.join(newest, "params"))
        open(path, "r+b").truncate(os.path.getsize(path) // 2)
    else:
        open(os.path.join(newest, "config", "metadata"), "w").write('{"model": ')
    ckpts = RunCheckpoints(str(tmp_path))
    with pytest.warns(CheckpointWarning, match=f"checkpoint {newest} is unreadable .*resuming "
                      "from step 5 instead"):
        state, data_state, step = ckpts.restore_latest(abstract(states[5]), TOY_CONFIG)
    assert step == 5 and data_state == {"micro_batch": 10}
    assert_bitwise(state, states[5])
    # set aside (not deleted), so the resumed run can write step 10 again
    assert ckpts.steps() == [5] and not os.path.exists(newest)
    assert len(os.listdir(tmp_path / "checkpoints_unreadable")) == 1
    ckpts.save(10, states[10], None, TOY_CONFIG)
    ckpts.close()
    gc.collect()


def test_no_readable_checkpoint_is_an_error(tmp_path):
    states = save_toy(tmp_path, [5])
    _garble(_largest_file(os.path.join(tmp_path, "checkpoints", "5", "params")))
    with pytest.raises(CheckpointError, match="no readable checkpoint in .*checkpoints/5: "
                       "params do not match their checksums"):
        RunCheckpoints(str(tmp_path)).restore_latest(abstract(states[5]), TOY_CONFIG)
    assert os.path.isdir(os.path.join(tmp_path, "checkpoints", "5"))  # nothing moved


def test_checkpoint_of_another_model_names_the_fields(tmp_path):
    from minillm_jax.model.transformer import abstract_params, build_model
    from minillm_jax.optim import build_optimizer
    from minillm_jax.train.step import init_state

    saved = config_lib.build_config(tiny_config(n_embd=64, n_head=4))
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                         abstract_params(build_model(saved.model)))
    checkpointing.save_params(str(tmp_path), saved, zeros, step=4)

    def target(config):
        tx, _ = build_optimizer(config.optim, config.run.iterations)
        return jax.eval_shape(lambda: init_state(build_model(config.model), tx, 0))

    ckpts = RunCheckpoints(str(tmp_path))
    other = config_lib.build_config(tiny_config(n_embd=32, n_head=4))
    with pytest.raises(CheckpointError) as err:
        ckpts.restore_latest(target(other), other)
    message = str(err.value)
    assert "was saved for a different model: n_embd=64 in the checkpoint vs 32 in the config" in (
        message)
    assert "parameter shapes (checkpoint vs config): blocks/attn/c_attn/kernel (2, 64, 192) vs " \
        "(2, 32, 96)" in message
    assert "--config.resume=False --config.overwrite=True" in message
    # same shapes, different heads: still refused, by field
    heads = config_lib.build_config(tiny_config(n_embd=64, n_head=8))
    with pytest.raises(CheckpointError, match="n_head=4 in the checkpoint vs 8 in the config"):
        ckpts.restore_latest(target(heads), heads)
    # dropout may change on resume; a params-only checkpoint restores with opt_state None
    resumed = config_lib.build_config(tiny_config(n_embd=64, n_head=4, dropout=0.2))
    state, data_state, step = ckpts.restore_latest(target(resumed), resumed)
    assert step == 4 and state.opt_state is None and data_state is None
    assert ckpts.steps() == [4]  # nothing was set aside


def test_resume_false_refuses_an_existing_run(tmp_path):
    from minillm_jax.train.trainer import train

    workdir = tmp_path / "run"
    save_toy(workdir, [5])
    (workdir / "metrics.jsonl").write_text('{"step": 5, "train_loss": 1.0}\n')
    (workdir / "wandb_id.txt").write_text("abc123")
    config = tiny_config(workdir=str(workdir), resume=False)
    with pytest.raises(ConfigError, match=r"config.resume=False but .*run already holds a run "
                       r"\(checkpoints for steps \[5\]\): pass --config.overwrite=True"):
        train(config)
    assert os.path.isdir(workdir / "checkpoints" / "5")
    rundir.prepare_run(str(workdir), resume=False, overwrite=True)
    assert not os.path.exists(workdir / "checkpoints")
    assert not os.path.exists(workdir / "metrics.jsonl")
    assert not os.path.exists(workdir / "wandb_id.txt")
    rundir.prepare_run(str(workdir), resume=False, overwrite=False)  # now empty: fine


_WRITE_FAILURE = textwrap.dedent("""
    import resource, signal, sys
    import jax.numpy as jnp
    from minillm_jax.train.checkpointing import CheckpointError
    from minillm_jax.train.run_checkpoints import RunCheckpoints
    from tests.test_checkpointing import TOY_CONFIG, toy_state
    ckpts = RunCheckpoints(sys.argv[1], keep=1)
    ckpts.save(1, toy_state(1, n=512), None, TOY_CONFIG)
    ckpts.wait()
    # from now on no file may grow past 64 KiB: writes fail like on a full disk
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, resource.RLIM_INFINITY))
    try:
        ckpts.save(2, toy_state(2, n=512), None, TOY_CONFIG)
        ckpts.wait()
    except CheckpointError as err:
        print("ERROR", err)
    else:
        print("NO ERROR")
""")


def test_failed_write_is_reported_and_keeps_older_checkpoints(tmp_path):
    proc = subprocess.run([sys.executable, "-c", _WRITE_FAILURE, str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "ERROR the checkpoint for step 2 could not be written to" in out, out + proc.stderr
    assert "File too large" in out and "Checkpoints kept: 1." in out
    assert "rerun the same command to resume from step 1" in out
    # keep=1, yet step 1 survives: old checkpoints go only after a newer one has committed
    states = {1: toy_state(1, n=512)}
    state, _, step = RunCheckpoints(str(tmp_path)).restore_latest(abstract(states[1]), TOY_CONFIG)
    assert step == 1
    assert_bitwise(state, states[1])


def test_trim_metrics_for_resume(tmp_path):
    lines = [json.dumps({"step": s, "train_loss": float(s)}) for s in range(1, 13)]
    lines.insert(10, json.dumps({"step": 10, "val_loss": 2.0}))
    lines.append(json.dumps({"step": 12, "final_val_loss": 1.0}))
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 13, "train_lo')
    assert rundir.trim_metrics(str(tmp_path), 10) == 4
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 11)) + [10]
    # resuming a finished run at its last step drops only the final eval, written again
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    rundir.trim_metrics(str(tmp_path), 12)
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[-1] == {"step": 12, "train_loss": 12.0}


def _save_toy_with_loop(workdir, steps):
    ckpts = RunCheckpoints(str(workdir))
    states = {}
    for step in steps:
        states[step] = toy_state(step, seed=step)
        ckpts.save(step, states[step], {"micro_batch": step * 2}, TOY_CONFIG,
                   loop_state={"skipped_steps": step})
    ckpts.close()
    return states


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("item,edit", [
    ("data", lambda d: {**d, "micro_batch": d["micro_batch"] + 1}),  # one digit of the position
    ("loop", lambda d: {**d, "skipped_steps": 7}),
    ("config", lambda d: {**d, "lr": d["lr"] * 2}),
    ("loop", None),  # the whole item deleted
])
def test_every_item_is_verified_and_a_bad_one_falls_back(tmp_path, item, edit):
    """A changed number in a JSON item (valid JSON, so orbax reads it) or a missing item makes
    the checkpoint unreadable: the restore falls back to the previous one, no traceback."""
    states = _save_toy_with_loop(tmp_path, [5, 10])
    path = os.path.join(tmp_path, "checkpoints", "10", item)
    if edit is None:
        import shutil

        shutil.rmtree(path)
    else:
        metadata = os.path.join(path, "metadata")
        value = json.load(open(metadata))
        json.dump(edit(value), open(metadata, "w"))
    ckpts = RunCheckpoints(str(tmp_path))
    with pytest.warns(CheckpointWarning, match="checkpoints/10 is unreadable"):
        restored = ckpts.restore_newest(abstract(states[5]), TOY_CONFIG)
    assert restored.step == 5 and restored.data_state == {"micro_batch": 10}
    assert restored.loop_state == {"skipped_steps": 5}
    assert_bitwise(restored.state, states[5])
    ckpts.close()


def test_checkpoint_without_checksums_restores_with_a_warning(tmp_path):
    """Checkpoints of older versions (no fingerprint item) still restore, saying that their
    integrity cannot be checked."""
    import shutil

    states = save_toy(tmp_path, [5])
    shutil.rmtree(os.path.join(tmp_path, "checkpoints", "5", "fingerprint"))
    with pytest.warns(CheckpointWarning, match="has no checksums .* cannot be detected"):
        state, data_state, step = RunCheckpoints(str(tmp_path)).restore_latest(
            abstract(states[5]), TOY_CONFIG)
    assert step == 5 and data_state == {"micro_batch": 10}
    assert_bitwise(state, states[5])


def _fake_other_process(monkeypatch, tmp_path, other_code_on_10):
    """Stands in for the allgather of restore decisions: another process reports
    `other_code_on_10` for the first step tried (10) and agrees otherwise. Records, in order,
    each decision (with whether checkpoint 10 was still in place then) and each checksum
    verification, so a test sees what happened before the decision."""
    from minillm_jax.train import distributed, run_checkpoints

    events = []

    def all_max(code):
        in_place = os.path.isdir(os.path.join(tmp_path, "checkpoints", "10"))
        events.append(("decide", code, in_place))
        return max(code, other_code_on_10) if len(events) == 1 else code

    real_verify = run_checkpoints.verify_state

    def verify_state(restored, abstract_state, step, path):
        events.append(("verify", step))
        return real_verify(restored, abstract_state, step, path)

    monkeypatch.setattr(distributed, "all_max", all_max)
    monkeypatch.setattr(run_checkpoints, "verify_state", verify_state)
    return events


def test_processes_agree_on_the_step_before_anything_is_moved(tmp_path, monkeypatch):
    """Another process could not read step 10 (this one could): every process must take the
    same decision, so this one skips step 10 as well, without comparing its checksums, and
    moves it aside only after the decision on step 5."""
    states = save_toy(tmp_path, [5, 10])
    events = _fake_other_process(monkeypatch, tmp_path, other_code_on_10=1)
    ckpts = RunCheckpoints(str(tmp_path))
    with pytest.warns(CheckpointWarning, match="unreadable on another process"):
        restored = ckpts.restore_newest(abstract(states[5]), TOY_CONFIG)
    assert restored.step == 5
    assert_bitwise(restored.state, states[5])
    # this process read both; step 10 was in place at both decisions and never verified
    assert events == [("decide", 0, True), ("decide", 0, True), ("verify", 5)]
    assert ckpts.steps() == [5]  # step 10 set aside once everyone agreed
    assert os.listdir(os.path.join(tmp_path, "checkpoints_unreadable"))[0].startswith("10-")
    ckpts.close()


def test_another_process_reporting_another_model_stops_every_process(tmp_path, monkeypatch):
    """Another process found step 10 saved for another model (this one read it): this process
    stops too, with the same kind of error, and nothing is moved or verified."""
    states = save_toy(tmp_path, [5, 10])
    events = _fake_other_process(monkeypatch, tmp_path, other_code_on_10=2)
    ckpts = RunCheckpoints(str(tmp_path))
    with pytest.raises(CheckpointError, match="checkpoints/10 was saved for another model "
                       "\\(reported by another process\\)"):
        ckpts.restore_newest(abstract(states[5]), TOY_CONFIG)
    assert events == [("decide", 0, True)]
    assert ckpts.steps() == [5, 10]
    assert not os.path.exists(os.path.join(tmp_path, "checkpoints_unreadable"))
    ckpts.close()


def test_protected_step_survives_rotation(tmp_path):
    ckpts = RunCheckpoints(str(tmp_path), keep=2)
    ckpts.protect(2)
    for step in range(1, 7):
        ckpts.save(step, toy_state(step, seed=step), None, TOY_CONFIG)
    ckpts.wait()
    assert ckpts.steps() == [2, 5, 6]
    ckpts.close()
