"""A missing dependency: one line saying what is missing and the commands, no traceback."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

CLIS = [["-m", "minillm_jax.main", "--config", "configs/demo.py"],
        ["tools/gpu_check.py", "--out", "unused"]]


@pytest.mark.parametrize("command", CLIS, ids=["main", "gpu_check"])
def test_missing_packages_give_one_line(tmp_path, command):
    # An image without grain and ml_collections: the shim makes their import fail.
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\nsys.modules['grain'] = None\nsys.modules['ml_collections'] = None\n")
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    proc = subprocess.run([sys.executable, *command], cwd=tmp_path if command[0] == "-m" else REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    line = lines[0]
    assert line.startswith("error: missing Python packages: ml_collections, grain")
    # grain's own runtime dependencies that are installed here are not asked for
    assert "array-record" not in line and "portpicker" not in line
    assert "pip install --no-index --no-deps wheelhouse/*.whl" in line
    assert "pip download --no-deps -d wheelhouse ml_collections grain" in line
    assert not (tmp_path / "unused").exists()  # nothing ran
