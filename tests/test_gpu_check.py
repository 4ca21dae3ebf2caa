"""The accelerator acceptance check: its CPU subset run from another directory, a kill partway,
a hanging cell killed by --budget-s, its own compilation cache, the exit verdict, the budget
(with a fake clock), cuDNN detection on HLO that has the custom call, and the loss-gap bound."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from minillm_jax.experiments import gpu_cells
from minillm_jax.experiments import gpu_check
from tests.conftest import REPO

ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
NO_BUDGET = ["--budget-s", "100000"]  # never skips: the budget is tested with a fake clock


def _check(out, *args, cwd=REPO, env=ENV, **kwargs):
    return subprocess.run([sys.executable, str(REPO / "tools" / "gpu_check.py"), "--out",
                           str(out), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900, **kwargs)


def _independent_flops_per_token(cell_config):
    """6 x matmul weights + causal attention, from the config's own shapes (llama, tied)."""
    from minillm_jax.config import build_config, load_config
    from minillm_jax.model.transformer import abstract_params, build_model

    config = load_config(REPO / "configs" / cell_config["config"])
    config.update(cell_config["overrides"])
    m = build_config(config, "x").model
    blocks = abstract_params(build_model(m))["blocks"]
    hidden = blocks["mlp"]["w1"]["kernel"].shape[-1]
    c = m.n_embd
    n = m.n_layer * (4 * c * c + 3 * c * hidden) + m.vocab_size * c
    return 6 * n + 6 * m.n_layer * c * m.sequence_length


def test_cpu_subset_from_another_directory_reports_cells_and_loss_gap(tmp_path,
                                                                     shakespeare_dir):
    """Run from a directory that is not the repository's, with a relative --out: the report,
    the children's results and the compilation cache all land under the caller's directory."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "shakespeare").symlink_to(shakespeare_dir)  # the demo corpus, relative
    env = {**ENV, "XDG_CACHE_HOME": str(tmp_path / "user_cache"),  # the training runs' cache
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}  # cache even quick CPU compiles
    proc = _check("check", "--cells", "1,3", "--steps", "1", "--gap-steps", "3", *NO_BUDGET,
                  cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = tmp_path / "check"
    assert sorted(p.name for p in (out / "logs").glob("*.result.json")) == [
        "cell1.result.json", "cell3.result.json"]
    report = json.loads((out / "gpu_check.json").read_text())
    env = report["environment"]
    assert env["platform"] == "cpu" and env["peak_flops"] > 0
    assert [c["name"] for c in report["cells"]] == ["best_fused.py reduced", "loss gap"]
    cell, gap = report["cells"][0], report["cells"][1]["result"]
    r = cell["result"]
    assert r["status"] == "ok" and r["attention_used"] == "xla_blocks" and r["cudnn_in_hlo"] is False
    # MFU recomputed from the recorded step time with an independent FLOPs formula
    fpt = _independent_flops_per_token(cell)
    assert r["flops_per_token"] == fpt
    tokens_per_s = r["tokens_per_step"] / (r["step_ms"] / 1000)
    assert r["tokens_per_s"] == pytest.approx(tokens_per_s, rel=1e-9)
    assert r["mfu"] == pytest.approx(tokens_per_s * fpt / env["peak_flops"], rel=1e-9)
    assert r["tokens_per_step"] == 4 * 32
    # the CPU backend has no memory stats: said, not invented
    assert r["peak_memory_gib"] is None and r["peak_memory_source"].startswith("n/a")
    assert r["xla_estimate_gib"] > 0
    # the loss gap: both runs trained, and the gap is within its derived bound
    assert gap["status"] == "ok" and gap["steps"] == 3 and gap["decrease"] > 0
    assert gap["bound"] == pytest.approx(3 * 2**-8 * gap["decrease"])
    assert gap["within_bound"] and gap["gap"] <= gap["bound"]
    # the bf16 run really ran in bf16: every loss differs from float32's by more than float32
    # rounding (a bf16 run silently in float32 would give a gap of 0, within any bound)
    for f32, bf16 in zip(gap["losses_f32"], gap["losses_bf16"], strict=True):
        assert abs(bf16 - f32) > 16 * 2**-23 * f32, (gap["losses_f32"], gap["losses_bf16"])
    # compiled into its own cache (the cell's step and the loss gap's two), never the user's
    assert len(list((out / "xla_cache").glob("jit_step-*"))) == 3
    assert not (tmp_path / "user_cache").exists()
    assert report["verdict"] == {"passed": True, "reason": "2 of 2 cells ok"}
    table = (out / "gpu_check.md").read_text()
    assert "| best_fused.py reduced | xla_blocks |" in table and "bf16 vs float32" in table
    assert table in proc.stdout  # the table is also printed
    assert proc.stdout.strip().splitlines()[-1] == "gpu_check: PASS: 2 of 2 cells ok"


AUTOTUNE_DIR = """
import sys
from jax._src import compiler
from minillm_jax.experiments.gpu_cells import _set_cache
_set_cache(sys.argv[1])
options = compiler.get_compile_options(num_replicas=1, num_partitions=1)
print(options.executable_build_options.debug_options.xla_gpu_per_fusion_autotune_cache_dir)
"""


def test_the_checks_cache_holds_xla_autotuning_results_too(tmp_path):
    """The cells' compile options (what a GPU compile would use) put XLA's per-fusion autotune
    cache under the check's compilation cache, as the docstring says."""
    cache = tmp_path / "check" / "xla_cache"
    proc = subprocess.run([sys.executable, "-c", AUTOTUNE_DIR, str(cache)], env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == str(cache / "xla_gpu_per_fusion_autotune_cache_dir")


def test_killed_partway_keeps_environment_and_finished_cells(tmp_path):
    out = tmp_path / "check"
    proc = subprocess.Popen(
        [sys.executable, "tools/gpu_check.py", "--out", str(out), "--cells", "1,2",
         "--steps", "1", "--fault", "2:hang", *NO_BUDGET],
        cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        report = {}
        while time.monotonic() < deadline:  # until cell 1 is done and cell 2 (hanging) started
            assert proc.poll() is None, "the check ended by itself"
            path = out / "gpu_check.json"
            if path.exists():
                report = json.loads(path.read_text())  # atomic writes: always whole JSON
                statuses = [c["result"].get("status") for c in report["cells"]]
                if statuses == ["ok", "running"]:
                    break
            time.sleep(0.5)
        else:
            pytest.fail(f"cell 1 never finished: {report}")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the check and its cell's process
        proc.wait()
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["environment"]["platform"] == "cpu" and report["environment"]["peak_flops"] > 0
    first = report["cells"][0]["result"]
    assert first["status"] == "ok" and first["step_ms"] > 0 and first["tokens_per_s"] > 0
    assert report["cells"][1]["result"]["status"] == "running"
    assert "| best_fused.py reduced | xla_blocks |" in (out / "gpu_check.md").read_text()


def test_budget_kills_a_hanging_cell_and_its_process(tmp_path):
    """--budget-s stops a cell that runs past it: the cell's process is killed (none of the
    check's processes outlives it), the cell is recorded as skipped and the check fails."""
    budget = 35  # a cell starts with >= MIN_START_S (15 s) left; the rest covers the probe
    began = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tools" / "gpu_check.py"), "--out", str(tmp_path / "check"),
         "--cells", "1", "--fault", "1:hang", "--budget-s", str(budget)],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)  # its own process group: the check and its cells' processes
    try:
        stdout, _ = proc.communicate(timeout=budget + 120)
    finally:
        elapsed = time.monotonic() - began
        try:
            os.killpg(proc.pid, signal.SIGKILL)
            outlived = True
        except ProcessLookupError:
            outlived = False
    assert not outlived, "a process of the check outlived it (the hanging cell was not killed)"
    assert proc.returncode == 1, stdout[-3000:]
    report = json.loads((tmp_path / "check" / "gpu_check.json").read_text())
    result = report["cells"][0]["result"]
    assert result["status"] == "skipped", result
    assert result["error"].startswith("did not finish within the budget (stopped after")
    assert gpu_check.MIN_START_S <= result["wall_s"] < budget
    assert report["wall_s"] == pytest.approx(budget, abs=5) and elapsed < budget + 20
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("gpu_check: FAIL: the first cell (best_fused.py reduced) did not "
                           "finish: skipped: did not finish within the budget"), last


def test_first_cell_failure_exits_nonzero_with_one_line(tmp_path):
    proc = _check(tmp_path / "check", "--cells", "1", "--fault", "1:exit", *NO_BUDGET)
    assert proc.returncode == 1
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("gpu_check: FAIL: the first cell (best_fused.py reduced) did not "
                           "finish: failed: the cell's process ended with no result: exit "
                           "status 137"), last
    assert "Traceback" not in proc.stdout + proc.stderr
    report = json.loads((tmp_path / "check" / "gpu_check.json").read_text())
    assert report["verdict"]["passed"] is False


def test_budget_skips_cells_in_order_with_a_fake_clock():
    now = [0.0]
    durations = {"a": 100.0, "b": 100.0, "c": 100.0, "d": 1.0}
    saved = []

    def launch(cell, timeout_s):
        if durations[cell.name] > timeout_s:
            now[0] += timeout_s
            raise TimeoutError
        now[0] += durations[cell.name]
        return {"status": "ok"}

    cells = [gpu_check.Cell(name, "x.py", {}) for name in "abcd"]
    gpu_check.run_cells(cells, launch, budget_s=250.0, save=lambda: saved.append(1),
                        clock=lambda: now[0])
    results = [c.result for c in cells]
    assert [r["status"] for r in results] == ["ok", "ok", "skipped", "skipped"]
    assert results[2]["error"] == "did not finish within the budget (stopped after 50 s)"
    assert results[3]["error"] == "budget spent (250 of 250 s)"
    assert len(saved) == 7  # before and after every cell run, once for the one never started


def _hlo_with_attention(implementation):
    import jax
    import jax.numpy as jnp
    from jax._src.cudnn import fused_attention_stablehlo as cudnn

    # Lowering needs no cuDNN library: bypass the version and GPU checks done while tracing.
    checks = cudnn.check_cudnn_version, cudnn.check_compute_capability
    cudnn.check_cudnn_version = lambda *a, **k: None
    cudnn.check_compute_capability = lambda *a, **k: True
    try:
        q = jax.ShapeDtypeStruct((2, 128, 4, 64), jnp.bfloat16)

        def loss(q, k, v):
            out = jax.nn.dot_product_attention(q, k, v, is_causal=True,
                                               implementation=implementation)
            return out.astype(jnp.float32).sum()

        return jax.jit(jax.grad(loss)).trace(q, q, q).lower(
            lowering_platforms=("cuda",)).as_text()
    finally:
        cudnn.check_cudnn_version, cudnn.check_compute_capability = checks


def test_cudnn_detection_on_hlo_with_and_without_the_custom_call():
    assert gpu_cells.cudnn_in_hlo(_hlo_with_attention("cudnn"))
    assert not gpu_cells.cudnn_in_hlo(_hlo_with_attention("xla"))


def _report(cell_result, gap_result):
    return {"cells": [{"name": "best_fused.py as configured", "result": cell_result},
                      {"name": gpu_check.GAP, "result": gap_result}]}


def test_verdict_fails_on_missing_cudnn_call_and_on_a_large_loss_gap():
    ok_gap = {"status": "ok", "within_bound": True}
    cudnn_ok = {"status": "ok", "attention_used": "cudnn", "cudnn_in_hlo": True}
    assert gpu_check.verdict(_report(cudnn_ok, ok_gap)) == (True, "2 of 2 cells ok")
    passed, reason = gpu_check.verdict(_report(dict(cudnn_ok, cudnn_in_hlo=False), ok_gap))
    assert not passed and "cuDNN attention was chosen" in reason and "__cudnn$fmha" in reason
    big_gap = {"status": "ok", "within_bound": False, "gap": 0.5, "bound": 0.39,
               "bound_fraction": 0.39, "decrease": 1.0, "steps": 100}
    passed, reason = gpu_check.verdict(_report(cudnn_ok, big_gap))
    assert not passed and reason.startswith("bf16 vs float32 loss gap 0.5000 is above its bound")


def test_loss_gap_bound_is_steps_times_bf16_precision():
    assert gpu_cells.loss_gap_bound(100) == 100 / 256
    assert gpu_cells.loss_gap_bound(10) == 10 / 256
    assert gpu_cells.loss_gap_bound(1000) == 0.5
