"""Sweeps: run variants, skip finished ones after an interruption, summary.csv and plots."""

import csv
import importlib.util
import json
import os
import textwrap

import pytest

from minillm_jax import sweep, trainer
from tests.conftest import REPO, tiny_config

SWEEP_FILE = """
from tests.conftest import tiny_config


def get_sweep():
    base = tiny_config(data_dir={data_dir!r}, iterations=6, eval_freq=3, log_freq=1,
                       batch_size=4, save_every=3)
    return {{"base": base, "variants": [
        {{"name": "L1_d64", "n_layer": 1}},
        {{"name": "L2_d32", "n_layer": 2, "n_embd": 32, "n_head": 2}},
    ]}}
"""


def _rows(out):
    with open(os.path.join(out, "summary.csv"), newline="") as f:
        return {row["name"]: row for row in csv.DictReader(f)}


def _pngs_ok(directory):
    for name in ("val_loss_vs_step.png", "perplexity_vs_params.png", "width_vs_depth.png",
                 "curves.png"):
        path = os.path.join(directory, name)
        assert os.path.getsize(path) > 1000, path
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_sweep_runs_resumes_and_reports(tmp_path, shakespeare_dir, monkeypatch, capsys):
    sweep_file = tmp_path / "tiny_sweep.py"
    sweep_file.write_text(SWEEP_FILE.format(data_dir=shakespeare_dir))
    out = str(tmp_path / "out")

    # 1. Only the first variant (as if the sweep had been interrupted after it).
    assert sweep.main([str(sweep_file), "--out", out, "--only", "L1_d64"]) == 0
    first = os.path.join(out, "L1_d64", "result.json")
    result = json.load(open(first))
    assert result["step"] == 6 and result["workdir"] == os.path.join(out, "L1_d64")
    rows = _rows(out)
    assert rows["L1_d64"]["status"] == "finished" and rows["L2_d32"]["status"] == "pending"
    first_mtime = os.stat(first).st_mtime_ns

    # 2. Interrupted inside the second variant (after its step-3 checkpoint): no result.json,
    # the sweep stops.
    calls = []
    real_train = trainer.train

    def interrupted(config, name):
        calls.append(name)
        partial = config.copy_and_resolve_references()
        partial.iterations = 3
        real_train(partial, name)
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sweep.main([str(sweep_file), "--out", out])
    assert calls == ["L2_d32"]
    assert not os.path.exists(os.path.join(out, "L2_d32", "result.json"))

    # 3. Rerun: the finished variant is skipped, the interrupted one is trained on its workdir.
    calls.clear()

    def counting(config, name):
        calls.append((name, config.workdir))
        return real_train(config, name)

    monkeypatch.setattr(trainer, "train", counting)
    capsys.readouterr()
    assert sweep.main([str(sweep_file), "--out", out]) == 0
    assert calls == [("L2_d32", os.path.join(out, "L2_d32"))]
    from minillm_jax.metrics import read_metrics

    trained_steps = [r["step"] for r in read_metrics(os.path.join(out, "L2_d32"))
                     if "train_loss" in r]
    assert trained_steps == [1, 2, 3, 4, 5, 6]  # resumed from step 3, not retrained
    assert os.stat(first).st_mtime_ns == first_mtime
    printed = capsys.readouterr().out
    assert "L1_d64: finished, skipped" in printed and "| L2_d32 | 2 | 32 | 2 |" in printed

    rows = _rows(out)
    assert list(rows) == ["L1_d64", "L2_d32"]
    for name, n_layer, n_embd, n_head in (("L1_d64", 1, 64, 4), ("L2_d32", 2, 32, 2)):
        row = rows[name]
        assert row["status"] == "finished"
        assert (int(row["n_layer"]), int(row["n_embd"]), int(row["n_head"])) == (
            n_layer, n_embd, n_head)
        assert int(row["steps"]) == 6 and int(row["tokens"]) == 6 * 4 * 32
        assert 0 < float(row["val_loss"]) < 12 and 0 < float(row["val_acc"]) < 1
        assert float(row["val_perplexity"]) == pytest.approx(
            2.718281828 ** float(row["val_loss"]), rel=1e-4)
        assert float(row["train_time_s"]) > 0 and float(row["predicted_loss"]) > 1.69
    from minillm_jax.planner import param_count

    assert int(rows["L1_d64"]["params"]) == param_count(1, 64, 4, sequence_length=32)
    assert int(rows["L2_d32"]["params"]) == param_count(2, 32, 2, sequence_length=32)
    _pngs_ok(out)

    # 4. Everything finished: nothing is trained again.
    calls.clear()
    assert sweep.main([str(sweep_file), "--out", out]) == 0
    assert calls == []

    # 5. tools/plot.py on the run directories, one of them without the sweep's config.json (its
    # config then comes from the checkpoint).
    os.remove(os.path.join(out, "L2_d32", "config.json"))
    spec = importlib.util.spec_from_file_location("plot_tool", REPO / "tools" / "plot.py")
    plot_tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot_tool)
    plots = str(tmp_path / "plots")
    assert plot_tool.main([os.path.join(out, "L1_d64"), os.path.join(out, "L2_d32"),
                           "--out", plots]) == 0
    _pngs_ok(plots)
    rows = _rows(plots)
    assert rows["L2_d32"]["params"] == _rows(out)["L2_d32"]["params"]
    assert rows["L2_d32"]["val_loss"] == _rows(out)["L2_d32"]["val_loss"]
    single = str(tmp_path / "single.png")
    assert plot_tool.main([os.path.join(out, "L1_d64"), "--out", single]) == 0
    assert os.path.getsize(single) > 1000


def test_sweep_file_checks_and_budget_minutes(tmp_path):
    base = tiny_config()
    with pytest.raises(sweep.SweepError, match="appears twice"):
        sweep.check_sweep({"base": base, "variants": [{"name": "a"}, {"name": "a"}]})
    with pytest.raises(sweep.SweepError, match="n_layers"):
        sweep.check_sweep({"base": base, "variants": [{"name": "a", "n_layers": 3}]})
    with pytest.raises(sweep.SweepError, match="directory name"):
        sweep.check_sweep({"base": base, "variants": [{"name": "a/b"}]})
    with pytest.raises(sweep.SweepError, match="not in the sweep"):
        sweep.run_sweep({"base": base, "variants": [{"name": "a"}]}, str(tmp_path), only=["b"])
    with pytest.raises(sweep.SweepError, match="variant 'bad'.*not divisible"):
        sweep.run_sweep({"base": base, "variants": [{"name": "bad", "n_head": 5}]},
                        str(tmp_path))

    variant = {"name": "L3_d128", "n_layer": 3, "n_embd": 128, "n_head": 2}
    config = sweep.variant_config(base, variant, "sweeps/x")
    assert (config.n_layer, config.n_embd, config.n_head) == (3, 128, 2)
    assert config.workdir == os.path.join("sweeps/x", "L3_d128")
    assert base.n_layer == 2  # the base is not modified

    without = tiny_config()
    if "budget_minutes" in without:
        del without.budget_minutes
    with pytest.raises(sweep.SweepError, match="config field `budget_minutes`"):
        sweep.variant_config(without, variant, "out", budget_minutes=5)
    with pytest.raises(sweep.SweepError, match="budget_minutes"):
        sweep.run_sweep({"base": without, "variants": [variant]}, str(tmp_path / "o"),
                        budget_minutes=5)
    assert not os.path.exists(tmp_path / "o" / "L3_d128")
    with_budget = tiny_config()
    if "budget_minutes" not in with_budget:
        with_budget.budget_minutes = 0.0
    assert sweep.variant_config(with_budget, variant, "out", budget_minutes=2.5).budget_minutes \
        == 2.5


def test_sweep_main_reports_errors(tmp_path, capsys):
    assert sweep.main([str(tmp_path / "missing.py")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.py"
    bad.write_text(textwrap.dedent("""
        def get_sweep():
            return {"variants": []}
    """))
    assert sweep.main([str(bad)]) == 2
    assert "must return" in capsys.readouterr().err
