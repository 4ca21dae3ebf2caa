"""The side-by-side speed harness (tools/bench.py --compare-llm-baselines) and the per-op step
profile, on a stand-in llm-baselines checkout built from tests/export/torch_reference.py (an
independent PyTorch GPTBase/Llama with llm-baselines' names), so no network and no copy of
their code is needed."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parent.parent
TINY = ["--config", str(REPO / "configs" / "bench_cpu.py"), "--config.n_layer=1",
        "--config.n_embd=32", "--config.n_head=2", "--config.vocab_size=256",
        "--config.sequence_length=16", "--config.batch_size=2"]

CONFIG_INIT = '''
def parse_args_with_format(format, base_parser, args, namespace):
    p = base_parser
    for name, default in [("batch_size", 32), ("acc_steps", 4), ("seed", 0), ("data_seed", 1337),
                          ("iterations", 25000), ("n_layer", 12), ("n_embd", 768), ("n_head", 12),
                          ("vocab_size", 50304), ("sequence_length", 512), ("eval_freq", 200)]:
        p.add_argument("--" + name, default=default, type=int)
    for name, default in [("lr", 1e-3), ("warmup_percent", 0.05), ("weight_decay", 0.1),
                          ("beta1", 0.9), ("beta2", 0.95), ("grad_clip", 0.0), ("dropout", 0.0)]:
        p.add_argument("--" + name, default=default, type=float)
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--model", default="base", choices=["base", "llama2"])
    p.add_argument("--scheduler", default="cos")
    p.add_argument("--bias", default=False, type=bool)  # as theirs: "--bias False" is True
    return p.parse_args(args, namespace)
'''

MODELS_UTILS = '''
import json, os, torch
import torch_reference

def get_model(args):
    with open(os.environ["FAKE_LB_ARGS_OUT"], "w") as f:
        json.dump({k: v for k, v in vars(args).items() if isinstance(v, (int, float, str))}, f)
    model = torch_reference.build(vars(args))
    def get_parameter_group_specs():
        decay = [n for n, p in model.named_parameters() if n.endswith(".weight") and p.dim() == 2
                 and "wte" not in n and "wpe" not in n and "lm_head" not in n]
        rest = [n for n, _ in model.named_parameters() if n not in decay]
        return [{"params": decay}, {"params": rest, "weight_decay": 0.0}]
    model.get_parameter_group_specs = get_parameter_group_specs
    return model
'''


@pytest.fixture
def checkout(tmp_path, monkeypatch) -> Path:
    """A directory shaped like an llm-baselines checkout (src/config, src/models)."""
    root = tmp_path / "llm-baselines"
    (root / "src" / "config").mkdir(parents=True)
    (root / "src" / "models").mkdir()
    (root / "src" / "config" / "__init__.py").write_text(CONFIG_INIT)
    (root / "src" / "models" / "__init__.py").write_text("")
    (root / "src" / "models" / "utils.py").write_text(MODELS_UTILS)
    (root / "src" / "torch_reference.py").write_text(
        (REPO / "tests" / "export" / "torch_reference.py").read_text())
    monkeypatch.setenv("FAKE_LB_ARGS_OUT", str(tmp_path / "their_args.json"))
    return root


def test_argv_keeps_what_their_parser_knows_and_leaves_false_booleans_out():
    from minillm_jax.experiments.versus_llm_baselines import llm_baselines_argv

    argv = llm_baselines_argv({"model": "base", "bias": False, "dropout": 0.1, "lr": 0.001,
                               "dataset": "slimpajama", "unknown_here": 3},
                              known={"model", "bias", "dropout", "lr", "dataset"})
    assert argv == ["--device", "cpu", "--model", "base", "--dropout", "0.1", "--lr", "0.001"]
    assert llm_baselines_argv({"bias": True}, known={"bias"})[-2:] == ["--bias", "True"]


def test_their_step_gets_our_run_and_trains(checkout, tmp_path):
    """Their step is built from our config's arguments (not their defaults), groups its
    parameters as their code says, and trains: the loss falls on a repeated batch."""
    import torch

    from minillm_jax.config.cli import parse_config_args
    from minillm_jax.experiments.versus_llm_baselines import build_their_step
    from minillm_jax.export.llm_baselines import args_for
    import argparse

    # a short schedule: their OneCycle warms up over 5% of the iterations from lr / 100
    _, c, _ = parse_config_args(argparse.ArgumentParser(),
                                [*TINY, "--config.iterations=100", "--config.lr=0.01"])
    step, model, opt = build_their_step(str(checkout), args_for(c)[0])
    seen = json.loads((tmp_path / "their_args.json").read_text())
    assert (seen["n_layer"], seen["n_embd"], seen["vocab_size"], seen["batch_size"]) == (
        1, 32, 256, 2)
    assert seen["device"] == "cpu" and seen["bias"] == 0  # not "--bias False" (= True)
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    assert id(model.lm_head.weight) not in decayed and len(decayed) == 4  # c_attn, c_proj x2, c_fc
    with torch.no_grad():
        before = model.lm_head.weight.clone()
    losses = [step() for _ in range(4)]
    assert losses[0] == pytest.approx(5.545, abs=0.3)  # about ln(256) at init
    assert losses[-1] < losses[0] - 0.05
    assert not torch.equal(before, model.lm_head.weight)
    sys.path.remove(str(checkout / "src"))
    for name in ("config", "models", "models.utils", "torch_reference"):
        sys.modules.pop(name, None)


def test_compare_alternates_sides_and_reports_the_median_ratio():
    from minillm_jax.experiments.versus_llm_baselines import compare

    calls = []
    times = {"ours": iter([1.0, 1.0, 1.0]), "theirs": iter([2.0, 0.5, 1.5])}

    def fake_run(side, config_args, path, steps, warmup):
        calls.append(side)
        return {"step_times_s": [next(times[side])] * steps, "threads": 2}

    r = compare("PATH", [], pairs=3, steps=2, run=fake_run, echo=lambda _: None)
    assert calls == ["ours", "theirs", "theirs", "ours", "ours", "theirs"]
    assert [p["ratio"] for p in r["pairs"]] == [2.0, 0.5, 1.5]
    assert r["ratio"] == 1.5


def test_bench_compare_runs_both_sides_in_fresh_processes(checkout):
    """Run from the checkout's parent directory with PATH relative to it, the tool found by
    its absolute path: both sides' processes run there too."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, str(REPO / "tools" / "bench.py"), *TINY,
                          "--compare-llm-baselines", checkout.name, "--pairs", "2", "--steps",
                          "1", "--warmup", "0"], capture_output=True, text=True,
                         env={**env, "JAX_PLATFORMS": "cpu"}, cwd=checkout.parent, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "pair 2 (theirs first)" in out.stdout
    assert "speed ratio (their step time / ours, median of pairs):" in out.stdout


def test_bench_compare_refuses_a_directory_that_is_not_a_checkout(tmp_path, capsys):
    from minillm_jax.experiments import benchmark

    assert benchmark.main([*TINY, "--compare-llm-baselines", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not an llm-baselines checkout" in err[0]


def test_bench_compare_refuses_a_model_they_cannot_run(checkout, capsys):
    from minillm_jax.experiments import benchmark

    assert benchmark.main([*TINY, "--config.tie_embeddings=False", "--compare-llm-baselines",
                           str(checkout)]) == 2
    assert "untied embeddings" in capsys.readouterr().err


# --------------------------------------------------------------------------- step profile


def test_self_times_count_nested_events_once():
    from minillm_jax.experiments.step_profile import _self_times

    e = lambda name, start, dur: SimpleNamespace(name=name, start_ns=start, duration_ns=dur)
    # a while loop (0-100) holding two body ops, then a sibling op after it
    totals = _self_times([e("while.1", 0, 100), e("dot.2", 10, 30), e("fusion.3", 50, 40),
                          e("copy.4", 120, 5)])
    assert totals == pytest.approx({"while.1": 30e-9, "dot.2": 30e-9, "fusion.3": 40e-9,
                                    "copy.4": 5e-9})


PROFILE_CHECK = """
import json
from pathlib import Path
from minillm_jax.config import build_config, load_config
from minillm_jax.experiments.step_profile import CATEGORIES, classify_hlo, profile_ours
from minillm_jax.train.build import build_run

c = load_config(Path("configs") / "bench_cpu.py")
c.update(dict(n_layer=1, n_embd=32, n_head=2, vocab_size=4096, sequence_length=32,
              batch_size=8, loss_chunk_size=64, compilation_cache="off"))
run = build_run(build_config(c, "t"))
hlo = run.compile_train_step().as_text()
categories = classify_hlo(hlo)
head_dots = [line.split(" = ")[0].strip().removeprefix("ROOT ").lstrip("%") for line in
             hlo.splitlines() if " dot(" in line and "4096" in line.split(" = ")[1][:20]]
r = profile_ours(c, steps=2, warmup=1)
print(json.dumps({"head": [categories[n] for n in head_dots],
                  "found": sorted(set(categories.values())), "all": list(CATEGORIES),
                  "cats": r["categories"], "step": r["step_time_s"]}))
"""


def test_profile_puts_the_head_matmul_and_the_loss_where_they_belong():
    """On a model whose output layer dominates (vocab 4096 x width 32), the matmuls and the
    softmax/loss categories hold most of the step, every category the step runs is found, and
    the classification of the compiled module names the head's dot a matmul. In a fresh process
    with no compilation cache: the profiler reads this process's own executions."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", PROFILE_CHECK], capture_output=True, text=True,
                         env=env, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["head"] and set(r["head"]) == {"matmuls"}
    assert r["found"] == sorted(r["all"])
    cats = r["cats"]
    assert sum(cats.values()) == pytest.approx(r["step"])
    assert cats["matmuls"] + cats["softmax & loss"] > 0.5 * r["step"]
    assert cats["softmax & loss"] > 0 and cats["optimizer"] > 0


# --------------------------------------------------------------------------- lr transfer


def test_lr_transfer_reads_the_sweep_and_names_the_best_rate_per_width(tmp_path):
    from minillm_jax.experiments.lr_transfer import read_rows, report, series, write_transfer_report

    rows = []
    for width, shift in ((128, 0.0), (256, -0.3)):
        for seed in (0, 1):
            for muon_lr, loss in ((0.01, 5.2), (0.02, 5.0), (0.04, 5.1)):
                rows.append(dict(n_embd=width, lr=0.003, muon_lr=muon_lr, seed=seed,
                                 val_loss=loss + shift + 0.01 * seed))
            for lr, loss in ((0.001, 5.3), (0.01, 4.9)):
                rows.append(dict(n_embd=width, lr=lr, muon_lr=0.02, seed=seed,
                                 val_loss=loss + shift + 0.01 * seed))
    rows.append(dict(n_embd=512, lr=0.003, muon_lr=0.02, seed=0, val_loss=float("nan"),
                     status="failed"))
    with open(tmp_path / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["n_embd", "lr", "muon_lr", "seed", "val_loss", "status"])
        w.writeheader()
        for r in rows:
            w.writerow({"status": "finished", **r})
    parsed = read_rows(str(tmp_path))
    assert len(parsed) == 20  # the failed run is left out
    muon = series(parsed, "muon_lr")
    assert [p[0] for p in muon[128]] == [0.01, 0.02, 0.04]
    assert muon[256][1][1] == pytest.approx(4.705) and muon[256][1][4] == 2
    lr = series(parsed, "lr")  # at muon_lr 0.02: 1e-3, 3e-3 (the centre) and 1e-2
    assert [p[0] for p in lr[128]] == [0.001, 0.003, 0.01]
    text = report(parsed)
    assert "| 128 |" in text and "| 0.02 | 0.1000 |" in text  # best muon_lr 0.02, by 0.1
    assert "| 0.01 | 0.1000 |" in text  # best lr 1e-2 over the centre 3e-3 (5.0 vs 4.9)
    paths = write_transfer_report(str(tmp_path))
    assert all(os.path.getsize(p) > 0 for p in paths)


def test_summary_rows_carry_the_learning_rates():
    from minillm_jax.experiments.runs import summary_row

    row = summary_row("x", {"opt": "muon", "lr": 0.003, "muon_lr": 0.02, "n_embd": 64}, None,
                      "d", "pending")
    assert (row["opt"], row["lr"], row["muon_lr"]) == ("muon", 0.003, 0.02)
    row = summary_row("x", {"opt": "adamw", "lr": 0.001, "muon_lr": 0.02}, None, "d", "pending")
    assert row["muon_lr"] == ""
