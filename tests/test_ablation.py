"""Multi-seed ablation statistics, table and plots on synthetic runs with known answers."""

import csv
import json
import math
import os

import numpy as np
import pytest

from minillm_jax.experiments import ablation
from minillm_jax.experiments.ablation import (ablation_table, curve, format_markdown, has_x, load_runs,
                                  mean_curve, plot_ablation, time_to_reach, variant_mean_curve,
                                  write_csv)
from minillm_jax.experiments.stats import paired_difference, summarize, t_cdf, t_critical

# Two-sided 95% Student-t critical values, df 1..30, as printed in standard tables (3 decimals).
T95_TABLE = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
             2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
             2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def make_run(points, final=None, flops=True, final_has_x=True):
    """metrics.jsonl records: a training log and a periodic eval at each (train_time_s, val_loss)
    point (step = 10 * time, 1e9 FLOPs and 100 tokens per step), then optionally the final eval
    at the last point's step."""
    records = []
    for t, loss in points:
        step = int(round(10 * t))
        extra = {"flops": 1e9 * step} if flops else {}
        records.append({"step": step, "train_loss": loss + 0.1, "lr": 1e-3, "tokens": 100 * step,
                        "tokens_per_s": 1.0, "step_time_s": 0.1, "train_time_s": t, **extra})
        records.append({"step": step, "val_loss": loss, "val_perplexity": math.exp(loss),
                        "val_acc": 0.3, "tokens": 100 * step, "train_time_s": t, **extra})
    if final is not None:
        t = points[-1][0]
        step = int(round(10 * t))
        rec = {"step": step, "final_val_loss": final, "final_val_perplexity": math.exp(final),
               "final_val_acc": 0.3}
        if final_has_x:
            rec.update(train_time_s=t, tokens=100 * step,
                       **({"flops": 1e9 * step} if flops else {}))
        records.append(rec)
    return records


# --- t quantiles ---------------------------------------------------------------------------


@pytest.mark.parametrize("df", range(1, 31))
def test_t_critical_matches_table(df):
    assert t_critical(df) == pytest.approx(T95_TABLE[df - 1], abs=5e-4)


def test_t_critical_named_values_and_limits():
    for df, value in [(1, 12.706), (2, 4.303), (4, 2.776), (10, 2.228), (30, 2.042)]:
        assert round(t_critical(df), 3) == value
    # exact closed forms: df=1 is Cauchy, t = tan(pi * 0.975); df=2: t = sqrt(2 / (1/q^2 - 1))
    # with q = 2 * 0.975 - 1 = 0.95
    assert t_critical(1) == pytest.approx(math.tan(math.pi * 0.475), rel=1e-12)
    assert t_critical(2) == pytest.approx(math.sqrt(2 / (1 / 0.95 ** 2 - 1)), rel=1e-12)
    assert t_critical(1, level=0.99) == pytest.approx(63.657, abs=5e-4)
    assert t_critical(31) < t_critical(30)  # continues past the table, no jump to 1.96
    assert t_critical(120) == pytest.approx(1.980, abs=5e-4)
    assert t_critical(1e9) == pytest.approx(1.959964, abs=1e-6)
    assert t_critical(float("inf")) == pytest.approx(1.959964, abs=1e-6)
    with pytest.raises(ValueError):
        t_critical(0)


def test_t_cdf_closed_forms():
    for t in (-3.0, -0.5, 0.0, 0.7, 2.0, 40.0):
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-13)
        assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-13)
    assert t_cdf(t_critical(7), 7) == pytest.approx(0.975, abs=1e-12)


# --- summaries -----------------------------------------------------------------------------


def test_summarize_known_values():
    s = summarize([1.0, 2.0, 3.0])
    assert (s.n, s.mean, s.std) == (3, 2.0, 1.0)
    assert s.sem == pytest.approx(1 / math.sqrt(3))
    assert s.ci95 == pytest.approx(4.303 / math.sqrt(3), rel=1e-4)
    assert (s.low, s.high) == pytest.approx((2 - s.ci95, 2 + s.ci95))


def test_summarize_one_and_no_values():
    one = summarize([3.5])
    assert (one.n, one.mean, one.std) == (1, 3.5, 0.0)
    assert math.isnan(one.sem) and math.isnan(one.ci95)  # one seed: no interval, not a 0 one
    none = summarize([])
    assert none.n == 0 and math.isnan(none.mean)


def test_paired_difference_constant_offset_and_dropped_seeds():
    base = {0: 3.0, 1: 2.5, 2: 3.25, 4: 9.0}
    variant = {0: 2.75, 1: 2.25, 2: 3.0, 3: 1.0}
    d = paired_difference(variant, base)
    assert (d.n, d.mean, d.std, d.ci95) == (3, -0.25, 0.0, 0.0)
    assert d.seeds == (0, 1, 2)
    assert d.dropped_seeds == (3, 4) and d.n_dropped == 2
    assert d.excludes_zero


def test_paired_difference_known_ci():
    d = paired_difference({0: 11.0, 1: 12.0, 2: 13.0}, {0: 10.0, 1: 10.0, 2: 10.0})
    assert (d.n, d.mean, d.std) == (3, 2.0, 1.0)
    assert d.ci95 == pytest.approx(4.303 / math.sqrt(3), rel=1e-4)
    # half-width 2.484 > 2: with 3 seeds a mean gain of 2 std is not resolved
    assert d.low == pytest.approx(2 - 4.3027 / math.sqrt(3), abs=1e-4)
    assert d.low < 0 < d.high and not d.excludes_zero


# --- curves --------------------------------------------------------------------------------


def test_curve_sorted_deduplicated_final_wins_and_borrows_x():
    records = make_run([(0, 5.0), (5, 4.0), (10, 3.5)], final=3.4, final_has_x=False)
    records.insert(0, {"step": 50, "val_loss": 9.9, "train_time_s": 5.0})  # overwritten later
    xs, ys = curve(records, "train_time_s")
    np.testing.assert_array_equal(xs, [0, 5, 10])
    np.testing.assert_array_equal(ys, [5.0, 4.0, 3.4])  # final eval replaces the step-100 eval
    xs, _ = curve(records, "step")
    np.testing.assert_array_equal(xs, [0, 50, 100])
    xs, _ = curve(records, "flops")
    np.testing.assert_array_equal(xs, [0, 5e10, 1e11])


def test_curve_without_flops_is_empty():
    records = make_run([(0, 5.0), (10, 3.0)], final=3.0, flops=False)
    xs, ys = curve(records, "flops")
    assert xs.size == 0 and ys.size == 0
    assert not has_x(records, "flops") and has_x(records, "tokens")
    with pytest.raises(ValueError):
        curve(records, "wallclock")


def test_time_to_reach_interpolates_between_bracketing_evals():
    records = make_run([(10, 4.0), (20, 3.0), (30, 2.5)], final=2.5)
    assert time_to_reach(records, 3.5) == pytest.approx(15.0)
    assert time_to_reach(records, 2.75) == pytest.approx(25.0)
    assert time_to_reach(records, 3.0) == 20.0  # reached exactly at an eval
    assert time_to_reach(records, 5.0) == 10.0  # already below at the first eval
    assert time_to_reach(records, 2.0) is None  # never reached
    assert time_to_reach(records, 3.5, x="flops") == pytest.approx(1.5e11)
    assert time_to_reach(records, 3.5, x="step") == pytest.approx(150.0)
    assert time_to_reach(make_run([(0, 5.0)], flops=False), 9.0, x="flops") is None


def test_time_to_reach_skips_nan():
    records = make_run([(10, float("nan")), (20, 3.0)])
    assert time_to_reach(records, 3.5) == 20.0


def test_mean_curve_uses_common_range():
    x1 = np.array([0.0, 10.0])
    x2 = np.array([2.0, 12.0])
    gx, gy = mean_curve([(x1, 10 - x1), (x2, 12 - x2)], num=9)
    np.testing.assert_allclose(gx, np.linspace(2, 10, 9))
    np.testing.assert_allclose(gy, 11 - gx)
    assert mean_curve([(x1, x1), (x1 + 20, x1)])[0].size == 0  # no overlap, no mean


def test_variant_mean_curve_ignores_unfinished_seed():
    seeds = {0: make_run([(0, 5.0), (100, 3.0)], final=3.0),
             1: make_run([(0, 4.0), (100, 3.5)], final=3.5),
             2: make_run([(0, 9.0), (40, 8.0)])}  # unfinished: would cut the range to [0, 40]
    gx, gy = variant_mean_curve(seeds, "train_time_s", num=3)
    np.testing.assert_allclose(gx, [0, 50, 100])
    np.testing.assert_allclose(gy, [4.5, 3.875, 3.25])
    gx, _ = variant_mean_curve({2: seeds[2]}, "train_time_s")  # no finished seed: use what exists
    assert gx[-1] == 40


# --- table ---------------------------------------------------------------------------------


def synthetic_runs():
    """Baseline finals 3.0/3.25/3.5 (mean 3.25 = the target) at t=100; 'fast' is 0.25 lower
    on every seed and crosses 3.25 at t = 20 + 40 / (2 - 0.25 s); 'slow' never gets there."""
    base = {s: make_run([(0, 5.0), (50, 4.0), (100, f)], final=f)
            for s, f in enumerate([3.0, 3.25, 3.5])}
    fast = {s: make_run([(0, 5.25), (20, 4.25), (60, 2.25 + 0.25 * s), (80, f - 0.25)],
                        final=f - 0.25)
            for s, f in enumerate([3.0, 3.25, 3.5])}
    slow = {0: make_run([(0, 5.0), (100, 3.5)], final=3.5),
            1: make_run([(0, 5.0), (100, 4.0)], final=4.0),
            3: make_run([(0, 5.0), (100, 3.5)], final=3.5),  # no baseline partner
            4: make_run([(0, 5.0), (40, 4.5)])}  # unfinished
    return {"base": base, "fast": fast, "slow": slow}


def test_ablation_table_known_values():
    rows = {r["variant"]: r for r in ablation_table(synthetic_runs(), "base")}
    assert list(rows) == ["base", "fast", "slow"]
    base, fast, slow = rows["base"], rows["fast"], rows["slow"]

    assert base["is_baseline"] and base["n_seeds"] == 3
    assert base["final_val_loss_mean"] == 3.25 and base["final_val_loss_std"] == 0.25
    assert base["final_val_loss_ci95"] == pytest.approx(4.303 * 0.25 / math.sqrt(3), rel=1e-4)
    assert base["diff_mean"] is None and base["n_pairs"] is None
    assert base["target_loss"] == 3.25
    # seed 0 crosses between (50, 4.0) and (100, 3.0) at 87.5; seed 1 ends exactly on it
    assert base["time_to_target_per_seed"] == pytest.approx([87.5, 100.0, None])
    assert base["n_reached"] == 2 and base["time_to_target_mean"] == pytest.approx(93.75)
    assert base["train_time_mean"] == 100.0
    assert base["speedup"] == pytest.approx(100 / 93.75)

    assert fast["diff_mean"] == pytest.approx(-0.25)
    assert fast["diff_std"] == pytest.approx(0.0, abs=1e-12)
    assert fast["diff_ci95"] == pytest.approx(0.0, abs=1e-11)
    assert fast["n_pairs"] == 3 and fast["dropped_seeds"] == []
    expected = [20 + 40 / (2 - 0.25 * s) for s in range(3)]
    assert fast["time_to_target_per_seed"] == pytest.approx(expected)
    assert fast["time_to_target_mean"] == pytest.approx(np.mean(expected))
    assert fast["speedup"] == pytest.approx(100 / np.mean(expected))
    assert fast["train_time_mean"] == 80.0

    assert slow["seeds"] == [0, 1, 3, 4] and slow["n_seeds"] == 3
    assert slow["unfinished_seeds"] == [4]
    assert slow["final_val_loss_per_seed"] == [3.5, 4.0, 3.5, None]
    assert slow["n_pairs"] == 2 and slow["dropped_seeds"] == [2, 3]
    assert slow["diff_mean"] == pytest.approx(0.625)
    assert slow["diff_std"] == pytest.approx(0.25 / math.sqrt(2))
    assert slow["diff_ci95"] == pytest.approx(12.706 * 0.125, rel=1e-4)
    assert slow["time_to_target_per_seed"] == [None] * 4
    assert slow["n_reached"] == 0 and slow["time_to_target_mean"] is None
    assert slow["speedup"] is None

    with pytest.raises(KeyError):
        ablation_table(synthetic_runs(), "nope")


def test_write_csv_and_markdown(tmp_path):
    rows = ablation_table(synthetic_runs(), "base")
    path = write_csv(rows, str(tmp_path / "ablation.csv"))
    with open(path, newline="") as f:
        read = {r["variant"]: r for r in csv.DictReader(f)}
    assert float(read["fast"]["diff_mean"]) == pytest.approx(-0.25)
    assert json.loads(read["base"]["time_to_target_per_seed"]) == [87.5, 100.0, None]
    assert read["base"]["diff_mean"] == "" and read["slow"]["speedup"] == ""

    md = format_markdown(rows)
    lines = md.splitlines()
    assert lines[0].startswith("| variant |") and len(lines) >= 5
    assert "| base (baseline) | 3/3 | 3.2500 ± 0.2500 | — | 93.8 (2/3) | 1.07× |" in md
    assert "| fast | 3/3 | 3.0000 ± 0.2500 | -0.2500 [-0.2500, -0.2500]" in md
    assert "(2 pairs)" in md and "— (0/4) | — |" in md
    assert "3.2500" in lines[-1]


def test_load_runs(tmp_path):
    runs = synthetic_runs()
    for variant, seeds in runs.items():
        for seed, records in seeds.items():
            d = tmp_path / variant / f"seed{seed}"
            d.mkdir(parents=True)
            (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "base" / "notes").mkdir()  # ignored
    loaded = load_runs(str(tmp_path))
    assert sorted(loaded) == ["base", "fast", "slow"]
    assert sorted(loaded["slow"]) == [0, 1, 3, 4]
    assert loaded["fast"][2] == runs["fast"][2]


# --- plots ---------------------------------------------------------------------------------


def _png_ok(path):
    assert os.path.getsize(path) > 1000, path
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_plot_ablation_writes_pngs(tmp_path):
    paths = plot_ablation(synthetic_runs(), str(tmp_path / "plots"), baseline="base")
    assert [os.path.basename(p) for p in paths] == [ablation.ABLATION_PLOTS["train_time_s"],
                                                    ablation.ABLATION_PLOTS["flops"]]
    for p in paths:
        _png_ok(p)


def test_plot_ablation_without_flops(tmp_path):
    runs = {"base": {0: make_run([(0, 5.0), (10, 3.0)], final=3.0, flops=False),
                     1: make_run([(0, 5.0), (12, 3.1)], final=3.1, flops=False)},
            "v": {0: make_run([(0, 5.0), (10, 2.9)], final=2.9, flops=False)}}
    with pytest.warns(UserWarning, match="no run logged 'flops'"):
        paths = plot_ablation(runs, str(tmp_path))
    assert [os.path.basename(p) for p in paths] == [ablation.ABLATION_PLOTS["train_time_s"]]
    _png_ok(paths[0])
    runs["v"][1] = make_run([(0, 5.0), (10, 2.8)], final=2.8)  # only this one has FLOPs
    with pytest.warns(UserWarning, match="left out"):
        paths = plot_ablation(runs, str(tmp_path))
    assert len(paths) == 2
    _png_ok(paths[1])
