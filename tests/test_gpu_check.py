"""The accelerator acceptance check runs its reduced CPU subset and writes its table."""

import json
import os
import subprocess
import sys

from tests.conftest import REPO


def test_cpu_subset_writes_json_and_table(tmp_path, shakespeare_dir):
    out = tmp_path / "check"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "tools/gpu_check.py", "--out", str(out), "--steps", "1",
         "--gap-steps", "3", "--budget-s", "300"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["environment"]["platform"] == "cpu"
    results = [cell["result"] for cell in report["cells"]]
    assert len(results) == 2 and all(r["status"] == "ok" for r in results)
    for r in results:
        assert r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1.5 and r["memory_gib"] > 0
        assert r["attention_used"] == "xla" and r["cudnn_in_hlo"] is False
    gap = report["loss_gap"]
    assert gap["steps"] == 3 and gap["max_rel_gap"] < 0.02
    table = (out / "gpu_check.md").read_text()
    assert "| xla scan chunked loss | xla |" in table and "bf16 vs float32" in table
    assert table in proc.stdout  # the table is also printed
