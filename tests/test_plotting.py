"""Curves against step / tokens / training time, the final-eval marker, and which sweep figures
are written (data preparation is tested, not pixels)."""

import json
import os
import warnings

import pytest

from minillm_jax.experiments import plotting
from minillm_jax.experiments import sweep
from minillm_jax.experiments.plotting import final_point, series, val_loss_curve, x_at, x_by_step

TOKENS_PER_STEP = 256


def make_records(final=1.5, final_step=45, evals=(10, 20, 30, 40), log_every=5, last_log=40):
    """What the trainer logs: train records (tokens, no train_time_s) every `log_every` steps up
    to `last_log`, evals (train_time_s = step / 10, no tokens), then the final eval at
    `final_step` (train_time_s, no tokens) unless final is None."""
    records = []
    for step in range(log_every, last_log + 1, log_every):
        records.append({"step": step, "train_loss": 3.0 - step / 40, "lr": 1e-3,
                        "tokens": TOKENS_PER_STEP * step, "tokens_per_s": 1e4})
        if step in evals:
            records.append({"step": step, "val_loss": 3.2 - step / 40,
                            "val_perplexity": 2.0 * step, "val_acc": 0.3,
                            "flops": 1e9 * step, "train_time_s": step / 10})
    if final is not None:
        records.append({"step": final_step, "final_val_loss": final,
                        "final_val_perplexity": 4.5, "steps_run": final_step,
                        "stop_reason": "budget", "flops": 1e9 * final_step,
                        "train_time_s": final_step / 10})
    return records


def write_run(directory, records):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return str(directory)


def test_val_loss_curve_has_final_eval_marker():
    curve = val_loss_curve(make_records(), "step")
    assert curve.periodic.x == [10, 20, 30, 40]
    assert curve.periodic.y == pytest.approx([2.95, 2.7, 2.45, 2.2])
    assert curve.final == (45.0, 1.5)
    assert val_loss_curve(make_records(final=None)).final is None  # unfinished run: no marker
    # the last final record wins (a run continued past its first end)
    records = make_records() + [{"step": 50, "final_val_loss": 1.4, "train_time_s": 5.0}]
    assert val_loss_curve(records).final == (50.0, 1.4)
    assert final_point(records, "final_val_perplexity") == (45.0, 4.5)


def test_curves_against_time_interpolate_train_records():
    records = make_records()
    curve = val_loss_curve(records, "time")
    assert curve.periodic.x == [1.0, 2.0, 3.0, 4.0] and curve.final == (4.5, 1.5)
    # train records carry no train_time_s: placed by step between the evals (0 at step 0)
    train = series(records, "train_loss", "time")
    assert train.x == pytest.approx([s / 10 for s in range(5, 41, 5)])
    assert train.left_out == 0


def test_curves_against_tokens_borrow_and_extrapolate():
    records = make_records()
    curve = val_loss_curve(records, "tokens")
    assert curve.periodic.x == [TOKENS_PER_STEP * s for s in (10, 20, 30, 40)]
    # the final eval (step 45) is past the last train log (step 40): tokens per step is constant
    assert curve.final == (TOKENS_PER_STEP * 45, 1.5)
    assert x_at(x_by_step(records, "tokens"), 45, extrapolate=False) is None


def test_time_is_not_extrapolated_points_left_out_with_warning(tmp_path):
    # a crashed run: train logs after its last eval, no final eval
    crashed = make_records(final=None, evals=(10, 20), last_log=30)
    train = series(crashed, "train_loss", "time")
    assert train.x == pytest.approx([0.5, 1.0, 1.5, 2.0]) and train.left_out == 2
    # an old run that never logged train_time_s: nothing can be placed
    old = [{k: v for k, v in r.items() if k != "train_time_s"} for r in make_records()]
    curve = val_loss_curve(old, "time")
    assert curve.periodic.x == [] and curve.periodic.left_out == 4 and curve.final is None
    assert val_loss_curve(old, "step").final == (45.0, 1.5)  # step needs nothing

    rows = [sweep.read_run(write_run(tmp_path / "crashed", crashed)),
            sweep.read_run(write_run(tmp_path / "old", old))]
    with pytest.warns(UserWarning) as caught:
        plotting.plot_val_loss(rows, str(tmp_path / "v.png"), x="time")
    messages = [str(w.message) for w in caught]
    assert any(m.startswith("old: 4 point(s) and the final eval left out") for m in messages)
    assert os.path.getsize(tmp_path / "v.png") > 1000
    with pytest.warns(UserWarning, match="crashed: 2 point"):
        plotting.plot_runs([rows[0]["run_dir"]], str(tmp_path / "c.png"), x="time")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # against step nothing is left out
        plotting.plot_runs([r["run_dir"] for r in rows], str(tmp_path / "s.png"))
    with pytest.raises(ValueError, match="x must be one of"):
        series(crashed, "train_loss", "flops")


def _png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_sweep_figures_need_several_runs(tmp_path):
    one = [sweep.read_run(write_run(tmp_path / "a", make_records()))]
    out = tmp_path / "one"
    os.makedirs(out)
    paths = plotting.plot_sweep(one, str(out))
    assert sorted(os.listdir(out)) == ["curves.png", "val_loss_vs_step.png"]
    assert all(_png(p) for p in paths)

    two = one + [sweep.read_run(write_run(tmp_path / "b", make_records(final=1.6)))]
    out = tmp_path / "two"
    os.makedirs(out)
    plotting.plot_sweep(two, str(out))
    assert sorted(os.listdir(out)) == ["curves.png", "perplexity_vs_params.png",
                                       "val_loss_vs_step.png", "width_vs_depth.png"]
    plotting.plot_sweep(two, str(out), x="time")  # its own names: nothing overwritten
    assert {"curves_vs_time.png", "val_loss_vs_time.png"} <= set(os.listdir(out))


def test_plot_tool_x_option(tmp_path, capsys):
    tool = plotting  # python -m minillm_jax.experiments.plotting, also tools/plot.py
    runs = [write_run(tmp_path / "runs" / name, make_records(final=f))
            for name, f in (("a", 1.5), ("b", 1.6))]
    out = tmp_path / "plots"
    assert tool.main([*runs, "--out", str(out), "--x", "tokens"]) == 0
    written = set(os.listdir(out))
    assert {"curves_vs_tokens.png", "val_loss_vs_tokens.png", "summary.csv",
            "perplexity_vs_params.png", "width_vs_depth.png"} <= written
    assert all(_png(out / n) for n in written if n.endswith(".png"))
    # one run: no sweep-only figures, written next to its metrics by default
    assert tool.main([runs[0], "--x", "time"]) == 0
    assert sorted(n for n in os.listdir(runs[0]) if n.endswith(".png")) == [
        "curves_vs_time.png", "val_loss_vs_time.png"]
    single = str(tmp_path / "single.png")
    assert tool.main([runs[0], "--out", single, "--x", "time"]) == 0 and _png(single)
    with pytest.raises(SystemExit):
        tool.main([runs[0], "--x", "flops"])
    capsys.readouterr()
