"""Every command run from a directory that is not the repository's: relative paths on its
command line mean the caller's directory, and the child processes a command starts import the
same minillm_jax as the command. (gpu_check, which starts children of its own, is run that way
in tests/test_gpu_check.py; the llm-baselines comparison in tests/test_versus_llm_baselines.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from minillm_jax.experiments.children import child_env
from tests.conftest import REPO

ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}

# Calls every console script's target with --help in one process, as the installed script
# would (sys.argv[0] is the script's name); prints {script: [exit status, first line]}.
HELP_ALL = """
import contextlib, importlib, io, json, sys, tomllib
scripts = tomllib.loads(open(sys.argv[1]).read())["project"]["scripts"]
result = {}
for name, target in scripts.items():
    module, _, function = target.partition(":")
    main = getattr(importlib.import_module(module), function)
    sys.argv = [name, "--help"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            code = main()
        except SystemExit as stop:
            code = stop.code
    result[name] = [code, out.getvalue().splitlines()[0]]
print(json.dumps(result))
"""


def _command(module: str, *args: str, cwd) -> subprocess.CompletedProcess:
    """`module`'s main run like its console script, in `cwd`."""
    code = f"import sys; from {module} import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=300)


def test_every_console_script_starts_from_another_directory(tmp_path):
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    proc = subprocess.run([sys.executable, "-c", HELP_ALL, str(REPO / "pyproject.toml")],
                          cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert sorted(result) == sorted(scripts)
    for name, (code, first) in result.items():
        assert code == 0 and first.startswith("usage: python -m minillm_jax."), (name, first)
    assert os.listdir(tmp_path) == []  # --help writes nothing


def test_prepare_and_plot_write_under_the_callers_directory(tmp_path):
    """minillm-prepare and minillm-plot with relative paths, run from a temporary directory."""
    proc = _command("minillm_jax.data.prepare", "--dataset", "shakespeare", "--out",
                    "prepared", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((tmp_path / "prepared" / "meta.json").read_text())
    assert meta["train"]["tokens"] > 0 and (tmp_path / "prepared" / "train.bin").is_file()

    run = tmp_path / "run"
    run.mkdir()
    records = [{"step": s, "train_loss": 10.0 - s, "lr": 1e-3} for s in range(1, 6)]
    records.append({"step": 5, "val_loss": 6.0})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    proc = _command("minillm_jax.experiments.plotting", "run", "--out", "plots/curves.png",
                    cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "plots" / "curves.png").stat().st_size > 0


def test_child_processes_import_this_minillm_jax_from_anywhere(tmp_path, monkeypatch):
    """A child started with child_env() in another directory, with no PYTHONPATH of the
    caller's, imports the minillm_jax of this checkout (not another installed copy) and runs
    in the directory it was started in."""
    monkeypatch.delenv("PYTHONPATH", raising=False)
    code = "import os, minillm_jax; print(minillm_jax.__file__); print(os.getcwd())"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=child_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    package, cwd = proc.stdout.strip().splitlines()
    assert package == str(REPO / "minillm_jax" / "__init__.py")
    assert os.path.samefile(cwd, tmp_path)
