"""Schedules: OneCycle against torch, the others against their closed forms."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from minillm_jax.config import ConfigError, build_config
from minillm_jax.config import sgdr_cycles
from minillm_jax.optim.schedules import onecycle, sgdr, wsd
from tests.optim.helpers import opt_config, optimizer, schedule_of

LR = 1e-3


def values(schedule, n):
    """schedule(0..n-1), evaluated as one vector (the schedules are elementwise)."""
    return np.broadcast_to(np.asarray(schedule(jnp.arange(n)), np.float64), (n,))


def torch_onecycle(n, pct, kind):
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=LR)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=LR, total_steps=n, pct_start=pct, anneal_strategy=kind,
        cycle_momentum=False, div_factor=100.0, final_div_factor=0.1)
    out = []
    for t in range(n):
        out.append(sched.get_last_lr()[0])
        opt.step()
        if t < n - 1:
            sched.step()
    return np.array(out)


@pytest.mark.parametrize("kind", ["cos", "linear"])
@pytest.mark.parametrize("n,pct", [(100, 0.05), (37, 0.3), (10, 0.05)])
def test_onecycle_matches_torch(kind, n, pct):
    ours = values(onecycle(LR, n, pct, kind), n)
    np.testing.assert_allclose(ours, torch_onecycle(n, pct, kind), rtol=2e-5, atol=1e-10)


@pytest.mark.parametrize("kind", ["cos", "linear"])
def test_onecycle_zero_length_warmup_does_not_crash(kind):
    # pct*N == 1: torch divides by zero; ours starts at the peak and anneals to lr/10.
    with pytest.raises(ZeroDivisionError):
        torch_onecycle(20, 0.05, kind)
    ours = values(onecycle(LR, 20, 0.05, kind), 20)
    assert np.all(np.isfinite(ours))
    assert ours[0] == pytest.approx(LR) and ours[-1] == pytest.approx(LR / 10)
    assert np.all(np.diff(ours) <= 1e-12)


def test_constant_and_validator_names():
    assert values(schedule_of(opt_config(scheduler="constant")), 5) == pytest.approx([3e-3] * 5)
    for name in ("sgdr", "wsd", "plateau"):
        build_config(opt_config(scheduler=name))  # the config validator accepts the new names


def sgdr_closed_form(t, lengths, peak, decay, warmup, init, low):
    start = 0
    for k, length in enumerate(lengths):
        if t < start + length or k == len(lengths) - 1:
            tau, pk = t - start, peak * decay ** k
            w = warmup if k == 0 else 0
            if tau < w:
                return init + (pk - init) * tau / w
            end = min(low, pk)
            p = min(tau - w, length - w) / (length - w)
            return end + (pk - end) * (1 + math.cos(math.pi * p)) / 2
        start += length


def test_sgdr_cycles_and_values():
    # first cycle 20% of 100 steps, doubling: 20, 40, then 80 cut to the 40 steps left.
    assert sgdr_cycles(100, 0.2, 2.0) == [20, 40, 40]
    assert sgdr_cycles(100, 25, 1.0) == [25, 25, 25, 25]  # >= 1: steps
    sched = sgdr(LR, 100, 0.2, 2.0, peak_decay=0.5, warmup_steps=5, init_lr=LR / 100,
                 min_lr=LR / 10)
    got = values(sched, 100)
    want = [sgdr_closed_form(t, [20, 40, 40], LR, 0.5, 5, LR / 100, LR / 10) for t in range(100)]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # Restarts: the lr jumps up exactly at steps 20 and 60, to peak * decay^k.
    jumps = [t for t in range(1, 100) if got[t] > got[t - 1] and t > 5]
    assert jumps == [20, 60]
    assert got[20] == pytest.approx(LR / 2) and got[60] == pytest.approx(LR / 4)
    assert got[0] == pytest.approx(LR / 100, rel=1e-5) and got[5] == pytest.approx(LR, rel=1e-5)
    assert got[99] == pytest.approx(LR / 10, rel=0.01)  # the cut cycle ends near the minimum


def test_sgdr_from_config_restarts_at_cycle_starts():
    config = opt_config(scheduler="sgdr", iterations=120, sgdr_first_cycle=0.25,
                        sgdr_cycle_mult=1.0, sgdr_peak_decay=0.8, warmup_percent=0.05)
    got = values(schedule_of(config), 120)
    jumps = [t for t in range(7, 120) if got[t] > got[t - 1]]
    assert jumps == [30, 60, 90]
    assert got[[30, 60, 90]] == pytest.approx(config.lr * 0.8 ** np.arange(1, 4))
    with pytest.raises(ConfigError):  # warm-up longer than the first cycle
        optimizer(opt_config(scheduler="sgdr", sgdr_first_cycle=0.05, warmup_percent=0.1))


@pytest.mark.parametrize("shape", ["linear", "cosine", "1-sqrt"])
def test_wsd_closed_form(shape):
    n, w, d, init, low = 100, 10, 20, LR / 100, LR / 10
    got = values(wsd(LR, n, w, d, shape, init_lr=init, min_lr=low), n)
    frac = {"linear": lambda p: 1 - p, "cosine": lambda p: (1 + math.cos(math.pi * p)) / 2,
            "1-sqrt": lambda p: 1 - math.sqrt(p)}[shape]
    want = []
    for t in range(n):
        if t < w:
            want.append(init + (LR - init) * t / w)
        elif t < n - d:
            want.append(LR)
        else:
            want.append(low + (LR - low) * frac((t - (n - d) + 1) / d))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert got[n - 1] == pytest.approx(low) and got[n - d - 1] == pytest.approx(LR)


def test_wsd_from_config_and_errors():
    config = opt_config(scheduler="wsd", iterations=50, warmup_percent=0.0, wsd_decay_frac=0.0)
    assert values(schedule_of(config), 50) == pytest.approx([config.lr] * 50)  # constant
    with pytest.raises(ConfigError):
        optimizer(opt_config(scheduler="wsd", wsd_decay_shape="exp"))
    with pytest.raises(ConfigError):
        optimizer(opt_config(scheduler="wsd", wsd_decay_frac=0.95, warmup_percent=0.1))
