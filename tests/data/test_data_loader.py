"""TrainLoader / iter_val_batches: sampling semantics, determinism, process sharding, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from minillm_jax.data import DataError, TrainLoader, iter_val_batches, num_val_batches

L = 16  # seq_len for the ramp data (20,001 tokens -> 1,250 chunks)


def _take(loader, n):
    out = [next(loader) for _ in range(n)]
    loader.close()
    return out


def _loader(data_dir, **kw):
    args = dict(batch_size=8, seq_len=L, seed=1337)
    args.update(kw)
    return TrainLoader(data_dir, **args)


def test_baselines_chunks_are_aligned_and_cover_each_epoch(ramp_dir):
    loader = _loader(ramp_dir, batch_size=64)
    chunks = (20_001 - 1) // L
    assert loader.batches_per_epoch == chunks // 64 == 19
    batches = _take(loader, 2 * 19)
    for b in batches:
        assert b["x"].shape == b["y"].shape == (1, 64, L) and b["x"].dtype == np.int32
        x, y = b["x"][0], b["y"][0]
        assert np.all(x[:, 0] % L == 0)  # aligned chunk starts (token value = position)
        np.testing.assert_array_equal(x[:, 1:], x[:, :-1] + 1)
        np.testing.assert_array_equal(y, x + 1)
    starts = [b["x"][0][:, 0] // L for b in batches]
    epoch0, epoch1 = np.concatenate(starts[:19]), np.concatenate(starts[19:])
    assert len(set(epoch0.tolist())) == 19 * 64 and len(set(epoch1.tolist())) == 19 * 64
    assert not np.array_equal(epoch0, epoch1)  # a new permutation each epoch
    assert np.all(epoch0 < chunks)


def test_deterministic_and_seeded(ramp_dir):
    a, b = _take(_loader(ramp_dir), 5), _take(_loader(ramp_dir), 5)
    c = _take(_loader(ramp_dir, seed=1), 5)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u["x"], v["x"])
    assert not np.array_equal(a[0]["x"], c[0]["x"])
    r1, r2 = _take(_loader(ramp_dir, mode="random"), 3), _take(_loader(ramp_dir, mode="random"), 3)
    np.testing.assert_array_equal(r1[2]["x"], r2[2]["x"])
    x = r1[0]["x"][0]
    np.testing.assert_array_equal(r1[0]["y"][0], x + 1)
    assert np.all((x[:, 0] >= 0) & (x[:, -1] < 20_000))


@pytest.mark.parametrize("mode", ["baselines", "random"])
def test_process_count_1_vs_4_identical(ramp_dir, mode):
    single = _take(_loader(ramp_dir, acc_steps=2, mode=mode), 4)
    parts = [_take(_loader(ramp_dir, acc_steps=2, mode=mode, process_index=i, process_count=4), 4)
             for i in range(4)]
    for step in range(4):
        for key in ("x", "y"):
            assert parts[0][step][key].shape == (2, 2, L)
            joined = np.concatenate([p[step][key] for p in parts], axis=1)
            np.testing.assert_array_equal(joined, single[step][key])


def test_acc_steps_are_consecutive_micro_batches(ramp_dir):
    micro = _take(_loader(ramp_dir, acc_steps=1), 6)
    steps = _take(_loader(ramp_dir, acc_steps=3), 2)
    np.testing.assert_array_equal(steps[1]["x"], np.concatenate([m["x"] for m in micro[3:6]]))


def test_state_round_trip_resumes_exactly(ramp_dir):
    kw = dict(batch_size=64, acc_steps=2)  # 19 micro-batches per epoch
    ref = _take(_loader(ramp_dir, **kw), 16)
    loader = _loader(ramp_dir, **kw)
    for _ in range(5):
        next(loader)
    state = json.loads(json.dumps(loader.get_state()))  # JSON-serialisable
    assert state["micro_batch"] == 10
    loader.close()
    resumed = _loader(ramp_dir, **kw)
    resumed.set_state(state)
    for k, b in enumerate(_take(resumed, 11)):  # crosses the epoch boundary at micro-batch 19
        np.testing.assert_array_equal(b["x"], ref[5 + k]["x"])
        np.testing.assert_array_equal(b["y"], ref[5 + k]["y"])
    # restore with a different process_count and acc_steps
    half = _loader(ramp_dir, batch_size=64, acc_steps=1, process_index=1, process_count=2)
    half.set_state(state)
    b = _take(half, 2)
    np.testing.assert_array_equal(b[0]["x"][0], ref[5]["x"][0][32:])
    np.testing.assert_array_equal(b[1]["x"][0], ref[5]["x"][1][32:])
    # restoring a state from another configuration is refused
    other = _loader(ramp_dir, batch_size=32)
    with pytest.raises(DataError, match="batch_size=64 but this run has batch_size=32"):
        other.set_state(state)
    other.close()


def test_val_batches_fixed_order_and_padding(ramp_dir):
    chunks = (1_000 - 1) // L  # 62
    assert num_val_batches(ramp_dir, batch_size=8, seq_len=L) == 8
    batches = list(iter_val_batches(ramp_dir, batch_size=8, seq_len=L))
    assert len(batches) == 8
    for k, b in enumerate(batches):
        assert b["x"].shape == b["y"].shape == b["mask"].shape == (8, L)
        assert b["x"].dtype == np.int32 and b["mask"].dtype == np.float32
    x = np.concatenate([b["x"] for b in batches])
    mask = np.concatenate([b["mask"] for b in batches])
    assert mask.sum() == chunks * L and np.all(mask[chunks:] == 0) and np.all(x[chunks:] == 0)
    np.testing.assert_array_equal(x[:chunks].reshape(-1), np.arange(chunks * L) + 7)
    np.testing.assert_array_equal(batches[3]["y"], batches[3]["x"] + 1)
    assert len(list(iter_val_batches(ramp_dir, batch_size=8, seq_len=L, max_batches=3))) == 3
    parts = [list(iter_val_batches(ramp_dir, batch_size=8, seq_len=L, process_index=i,
                                   process_count=2)) for i in range(2)]
    for k in range(8):
        for key in ("x", "y", "mask"):
            np.testing.assert_array_equal(
                np.concatenate([parts[0][k][key], parts[1][k][key]]), batches[k][key])


def test_shakespeare_batches(shakespeare_dir):
    loader = TrainLoader(shakespeare_dir, batch_size=4, seq_len=64, seed=0, acc_steps=2)
    b = _take(loader, 1)[0]
    assert b["x"].shape == (2, 4, 64) and b["x"].max() <= 50256
    np.testing.assert_array_equal(b["x"][:, :, 1:], b["y"][:, :, :-1])
    val = next(iter_val_batches(shakespeare_dir, batch_size=4, seq_len=64))
    assert val["mask"].all()
