"""Fixtures for the data tests (helpers live in data_helpers.py)."""

from __future__ import annotations

import numpy as np
import pytest
from tests.data.data_helpers import DOCS, SETS, write_tokens


@pytest.fixture
def corpus():
    return list(DOCS), list(SETS)


@pytest.fixture(scope="session")
def shakespeare_dir(tmp_path_factory):
    """The vendored corpus, prepared once per session (about 1-2 s)."""
    from minillm_jax.data import ensure_dataset
    directory = str(tmp_path_factory.mktemp("shakespeare"))
    ensure_dataset("shakespeare", directory)
    return directory


@pytest.fixture(scope="session")
def ramp_dir(tmp_path_factory):
    """train = 0, 1, 2, ... (token value = position mod 50000), val likewise from 7."""
    directory = str(tmp_path_factory.mktemp("ramp"))
    return write_tokens(directory, np.arange(20_001) % 50_000, (np.arange(1_000) + 7) % 50_000)
