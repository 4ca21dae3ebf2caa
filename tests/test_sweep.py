"""Sweeps: run variants, skip finished ones after an interruption, summary.csv and plots."""

import csv
import importlib.util
import json
import os
import textwrap

import pytest

from minillm_jax.experiments import sweep
from minillm_jax.train import trainer
from tests.conftest import REPO, tiny_config

SWEEP_FILE = """
from tests.conftest import tiny_config


def get_sweep():
    # a constant lr of 2e-2 trains visibly in 6 steps (val loss 8.08-8.83 measured over seeds
    # 0 and 1 and both variants; untrained 10.83): the report's numbers can be checked
    base = tiny_config(data_dir={data_dir!r}, iterations=6, eval_freq=3, log_freq=1,
                       batch_size=4, save_every=3, lr=2e-2, scheduler="constant")
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
    from minillm_jax.train.metrics import read_metrics

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
        # trained, not untrained (ln 50304 = 10.83): see SWEEP_FILE for the measured values
        assert 0 < float(row["val_loss"]) < 9.8 and 0 < float(row["val_acc"]) < 1
        assert float(row["val_perplexity"]) == pytest.approx(
            2.718281828 ** float(row["val_loss"]), rel=1e-4)
        assert float(row["train_time_s"]) > 0 and float(row["predicted_loss"]) > 1.69
    from minillm_jax.experiments.planner import param_count

    assert int(rows["L1_d64"]["params"]) == param_count(1, 64, 4, sequence_length=32)
    assert int(rows["L2_d32"]["params"]) == param_count(2, 32, 2, sequence_length=32)
    _pngs_ok(out)

    # 4. Everything finished: nothing is trained again.
    calls.clear()
    assert sweep.main([str(sweep_file), "--out", out]) == 0
    assert calls == []

    # 5. python -m minillm_jax.experiments.plotting (tools/plot.py) on the run directories, one of them
    # without the sweep's config.json (its config then comes from the checkpoint).
    os.remove(os.path.join(out, "L2_d32", "config.json"))
    from minillm_jax.experiments import plotting as plot_tool
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


# ---------------------------------------------------------------------------------------------
# Multi-seed ablations, with a fake trainer (no training): every run writes a synthetic
# metrics.jsonl whose numbers give the ablation table a known answer.

BASE_SEED, BASE_DATA_SEED = 7, 100
FAST_LR = 1e-2
# Final val loss per seed k. fast - base = -0.1 + (0, 0.02, -0.02): paired mean -0.1, std 0.02.
FINALS = {"base": (2.0, 2.1, 2.2), "fast": (1.9, 2.02, 2.08)}
EVAL_TIMES = (1.0, 2.0, 3.0, 4.0)  # train_time_s of the evals at steps 10, 20, 30, 40


def _seed_sweep(**extra):
    base = tiny_config(seed=BASE_SEED, data_seed=BASE_DATA_SEED)
    return {"base": base, "variants": [{"name": "base"}, {"name": "fast", "lr": FAST_LR}],
            **extra}


def _synthetic_records(final, last_step=40, final_record=True):
    """Evals on the line loss = final + 0.3 * (4 - t) at t = step / 10, then the final eval."""
    records = []
    for t in EVAL_TIMES:
        step = int(10 * t)
        if step > last_step:
            break
        loss = final + 0.3 * (4 - t)
        records.append({"step": step, "train_loss": loss + 0.05, "lr": 1e-3, "tokens": 256 * step})
        records.append({"step": step, "val_loss": loss, "val_perplexity": 2.718281828 ** loss,
                        "val_acc": 0.3, "flops": 1e9 * step, "train_time_s": t})
    if final_record:
        records.append({"step": 40, "final_val_loss": final, "final_val_acc": 0.3,
                        "steps_run": 40, "stop_reason": "iterations", "flops": 4e10,
                        "train_time_s": 4.0})
    return records


class FakeTrainer:
    """train_fn for run_sweep: logs the call, writes metrics.jsonl, returns the final eval.

    `fail`: run names that raise RuntimeError; `interrupt`: the run name that writes half its
    metrics (no final eval) and raises KeyboardInterrupt, as a killed run would."""

    def __init__(self, fail=(), interrupt=None):
        self.calls, self.fail, self.interrupt = [], set(fail), interrupt

    def __call__(self, config, name):
        variant = "fast" if config.lr == FAST_LR else "base"
        k = config.seed - BASE_SEED
        self.calls.append((name, config.workdir, config.seed, config.data_seed))
        if name in self.fail:
            raise RuntimeError(f"{name} diverged")
        done = name != self.interrupt
        records = _synthetic_records(FINALS[variant][k], 40 if done else 20, final_record=done)
        with open(os.path.join(config.workdir, "metrics.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
        if not done:
            raise KeyboardInterrupt
        return {"val_loss": FINALS[variant][k], "val_acc": 0.3, "step": 40,
                "workdir": config.workdir, "train_time_s": 4.0}

    @property
    def names(self):
        return [c[0] for c in self.calls]


SEED_MAJOR = ["base/seed0", "fast/seed0", "base/seed1", "fast/seed1", "base/seed2", "fast/seed2"]


def _ablation_rows(out):
    with open(os.path.join(out, "ablation.csv"), newline="") as f:
        return {row["variant"]: row for row in csv.DictReader(f)}


def test_seeded_sweep_layout_order_and_ablation_report(tmp_path):
    out = str(tmp_path / "out")
    fake, logs = FakeTrainer(), []
    rows = sweep.run_sweep(_seed_sweep(), out, seeds=3, train_fn=fake, log=logs.append)

    # seed-major order; <out>/<variant>/seed<k>; seed and data_seed shifted by k
    assert fake.names == SEED_MAJOR
    for name, workdir, seed, data_seed in fake.calls:
        variant, k = name.split("/seed")
        assert workdir == os.path.join(out, variant, f"seed{k}")
        assert (seed, data_seed) == (BASE_SEED + int(k), BASE_DATA_SEED + int(k))
        saved = json.load(open(os.path.join(workdir, "config.json")))
        assert (saved["seed"], saved["data_seed"]) == (seed, data_seed)
        assert os.path.isfile(os.path.join(workdir, "result.json"))

    # summary.csv: one row per run, grouped by variant, with variant and seed columns
    assert [r["name"] for r in rows] == sorted(SEED_MAJOR)
    with open(os.path.join(out, "summary.csv"), newline="") as f:
        summary = list(csv.DictReader(f))
    assert [(r["name"], r["variant"], r["seed"]) for r in summary] == [
        (f"{v}/seed{k}", v, str(k)) for v in ("base", "fast") for k in range(3)]
    assert all(r["status"] == "finished" for r in summary)
    assert [float(r["val_loss"]) for r in summary] == pytest.approx(
        [*FINALS["base"], *FINALS["fast"]])

    # ablation.csv: the known answer
    table = _ablation_rows(out)
    assert list(table) == ["base", "fast"]
    base, fast = table["base"], table["fast"]
    assert base["is_baseline"] == "True" and base["diff_mean"] == ""
    assert float(base["final_val_loss_mean"]) == pytest.approx(2.1)
    assert float(base["final_val_loss_std"]) == pytest.approx(0.1)
    assert float(fast["final_val_loss_mean"]) == pytest.approx(2.0)
    assert int(fast["n_seeds"]) == 3 and int(fast["n_pairs"]) == 3
    assert float(fast["diff_mean"]) == pytest.approx(-0.1)
    assert float(fast["diff_std"]) == pytest.approx(0.02)
    ci95 = 4.302653 * 0.02 / 3 ** 0.5  # t(0.975, df=2) * std / sqrt(n)
    assert float(fast["diff_ci95"]) == pytest.approx(ci95, rel=1e-5)
    assert float(fast["diff_high"]) == pytest.approx(-0.1 + ci95, rel=1e-5)
    # loss 2.1 is crossed between the evals at t=3 and t=4: t = 4 - (2.1 - final) / 0.3
    reach = [4 - (2.1 - f) / 0.3 for f in FINALS["fast"]]
    assert json.loads(fast["time_to_target_per_seed"]) == pytest.approx(reach)
    assert float(fast["time_to_target_mean"]) == pytest.approx(11 / 3)
    assert float(fast["speedup"]) == pytest.approx(4 / (11 / 3))
    assert json.loads(base["time_to_target_per_seed"])[0] == pytest.approx(4 - 0.1 / 0.3)
    assert json.loads(base["time_to_target_per_seed"])[2] is None  # 2.2 never reaches 2.1

    # ablation.md is the logged Markdown table; the plots exist
    markdown = open(os.path.join(out, "ablation.md")).read()
    assert markdown.strip() in logs
    assert "| base (baseline) | 3/3 | 2.1000 ± 0.1000 | — |" in markdown
    assert (f"| fast | 3/3 | 2.0000 ± 0.0917 | -0.1000 [{-0.1 - ci95:+.4f}, {-0.1 + ci95:+.4f}]"
            in markdown)
    for name in ("ablation_val_loss_vs_time.png", "ablation_val_loss_vs_flops.png"):
        with open(os.path.join(out, name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert not os.path.exists(os.path.join(out, "width_vs_depth.png"))  # not a shape sweep


def test_seeded_sweep_resumes_seed_major(tmp_path):
    out = str(tmp_path / "out")
    interrupted = FakeTrainer(interrupt="base/seed1")
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(_seed_sweep(), out, seeds=3, train_fn=interrupted, log=lambda _: None)
    assert interrupted.names == SEED_MAJOR[:3]
    # seed 0 is a complete pair already; the interrupted run has metrics but no result.json
    assert sweep.is_finished(os.path.join(out, "fast", "seed0"))
    assert not sweep.is_finished(os.path.join(out, "base", "seed1"))
    first = os.path.join(out, "base", "seed0", "result.json")
    mtime = os.stat(first).st_mtime_ns

    rerun, logs = FakeTrainer(), []
    sweep.run_sweep(_seed_sweep(), out, seeds=3, train_fn=rerun, log=logs.append)
    assert rerun.names == SEED_MAJOR[2:]  # the interrupted run first, in its own workdir
    assert rerun.calls[0][1] == os.path.join(out, "base", "seed1")
    assert os.stat(first).st_mtime_ns == mtime
    assert "[1/6] base/seed0: finished, skipped" in logs

    # everything finished: nothing trains, the report is written again
    os.remove(os.path.join(out, "ablation.csv"))
    again = FakeTrainer()
    sweep.run_sweep(_seed_sweep(), out, seeds=3, train_fn=again, log=lambda _: None)
    assert again.calls == []
    assert float(_ablation_rows(out)["fast"]["diff_mean"]) == pytest.approx(-0.1)

    # fewer seeds than on disk: the table counts only the sweep's seeds
    sweep.run_sweep(_seed_sweep(), out, seeds=2, train_fn=again, log=lambda _: None)
    assert again.calls == [] and _ablation_rows(out)["fast"]["n_seeds"] == "2"


def test_seeded_sweep_failed_run_does_not_end_it(tmp_path):
    out = str(tmp_path / "out")
    fake = FakeTrainer(fail={"fast/seed1"})
    rows = sweep.run_sweep(_seed_sweep(), out, seeds=3, train_fn=fake, log=lambda _: None)
    assert fake.names == SEED_MAJOR
    status = {r["name"]: r["status"] for r in rows}
    assert status.pop("fast/seed1") == "failed" and set(status.values()) == {"finished"}
    fast = _ablation_rows(out)["fast"]
    assert (fast["n_seeds"], fast["n_pairs"]) == ("2", "2")  # seeds 0 and 2 pair up
    assert json.loads(fast["unfinished_seeds"]) == [1]  # failed before any log: still listed
    assert "| fast | 2/3 |" in open(os.path.join(out, "ablation.md")).read()
    assert float(fast["diff_mean"]) == pytest.approx(-0.11)  # seeds 0, 2: -0.10 and -0.12


def test_seeded_sweep_preflight_and_option_checks(tmp_path):
    out = str(tmp_path / "out")
    fake = FakeTrainer()
    bad = _seed_sweep()
    bad["variants"].append({"name": "bad", "n_head": 5})
    with pytest.raises(sweep.SweepError, match=r"variant 'bad' \(seed 0\).*not divisible"):
        sweep.run_sweep(bad, out, seeds=2, train_fn=fake)
    assert fake.calls == [] and not os.path.exists(out)  # nothing ran, nothing was created

    pinned = _seed_sweep()
    pinned["variants"][1]["seed"] = 3
    with pytest.raises(sweep.SweepError, match=r"'fast' sets \['seed'\]"):
        sweep.run_sweep(pinned, out, seeds=2, train_fn=fake)
    with pytest.raises(sweep.SweepError, match="--baseline 'nope' is not a variant"):
        sweep.run_sweep(_seed_sweep(), out, seeds=2, baseline="nope", train_fn=fake)
    with pytest.raises(sweep.SweepError, match="--seeds must be a whole number"):
        sweep.run_sweep(_seed_sweep(), out, seeds=0, train_fn=fake)
    with pytest.raises(sweep.SweepError, match="'seeds' must be a whole number"):
        sweep.check_sweep(_seed_sweep(seeds="3"))
    with pytest.raises(sweep.SweepError, match="'baseline' 'nope' is not a variant"):
        sweep.check_sweep(_seed_sweep(baseline="nope"))
    with pytest.raises(sweep.SweepError, match="add --seeds"):
        sweep.run_sweep(_seed_sweep(), out, baseline="fast", train_fn=fake)
    assert fake.calls == []


def test_unseeded_sweep_layout_unchanged(tmp_path):
    out = str(tmp_path / "out")
    fake = FakeTrainer()
    rows = sweep.run_sweep(_seed_sweep(), out, train_fn=fake, log=lambda _: None)
    assert [(c[0], c[1], c[2], c[3]) for c in fake.calls] == [
        ("base", os.path.join(out, "base"), BASE_SEED, BASE_DATA_SEED),
        ("fast", os.path.join(out, "fast"), BASE_SEED, BASE_DATA_SEED)]
    assert "seed" not in rows[0]
    assert list(_rows(out)) == ["base", "fast"] and "variant" not in _rows(out)["base"]
    assert not os.path.exists(os.path.join(out, "ablation.csv"))


SEEDED_SWEEP_FILE = """
from tests.conftest import tiny_config


def get_sweep():
    return {{"base": tiny_config(seed={seed}, data_seed={data_seed}),
            "variants": [{{"name": "base"}}, {{"name": "fast", "lr": {lr}}}],
            "seeds": 2, "baseline": "fast"}}
"""


def test_seeded_sweep_cli(tmp_path, monkeypatch, capsys):
    sweep_file = tmp_path / "abl.py"
    sweep_file.write_text(SEEDED_SWEEP_FILE.format(seed=BASE_SEED, data_seed=BASE_DATA_SEED,
                                                   lr=FAST_LR))
    out = str(tmp_path / "out")
    assert sweep.main([str(sweep_file), "--out", out, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "fast (baseline):" in printed and "seeds 0-1: 0 finished, 2 to run" in printed
    assert "order (seed-major): base/seed0, fast/seed0, base/seed1, fast/seed1" in printed
    assert not os.path.exists(out)

    fake = FakeTrainer(fail={"base/seed2"})
    monkeypatch.setattr(trainer, "train", fake)
    # the sweep file's seeds (2) and baseline ("fast")
    assert sweep.main([str(sweep_file), "--out", out]) == 0
    assert fake.names == SEED_MAJOR[:4]
    printed = capsys.readouterr().out
    assert "| fast (baseline) | 2/2 |" in printed and "| base | 2/2 |" in printed
    # --seeds wins over the file: only seed 2 is new; --baseline wins too; a failed run -> 1
    fake.calls.clear()
    assert sweep.main([str(sweep_file), "--out", out, "--seeds", "3", "--baseline",
                       "base"]) == 1
    assert fake.names == ["base/seed2", "fast/seed2"]
    captured = capsys.readouterr()
    assert "| base (baseline) | 2/3 |" in captured.out and "base/seed2" in captured.err
    assert sweep.main([str(sweep_file), "--out", out, "--only", "nope"]) == 2


def test_example_ablation_sweep_file_checks():
    path = REPO / "configs" / "sweeps" / "ablation_demo_optimizer.py"
    loaded = sweep.load_sweep(path)
    assert sweep.resolve_ablation(loaded, None, None) == (3, "adamw")
    lines = sweep.dry_run(loaded, "/nonexistent/out", None, None, None, None)  # builds configs
    assert lines[0].startswith("adamw (baseline):") and lines[1].startswith("muon:")
    assert "python -m minillm_jax.sweep configs/sweeps/ablation_demo_optimizer.py" in (
        importlib.util.spec_from_file_location("x", path).loader.get_source("x"))


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "configs" / "sweeps").glob("*.py")))
def test_every_sweep_file_dry_runs(name):
    """Every variant of every shipped sweep builds through build_config (nothing trains)."""
    lines = sweep.dry_run(sweep.load_sweep(REPO / "configs" / "sweeps" / f"{name}.py"),
                          "/nonexistent/out", None, None, None, None)
    assert lines and not any("error" in line.lower() for line in lines)
