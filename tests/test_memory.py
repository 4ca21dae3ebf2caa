"""The memory pre-flight: a step that cannot fit stops before training, in one line."""

import pytest

from minillm_jax.train import memory
from minillm_jax.config import ConfigError, build_config
from tests.conftest import tiny_config

GIB = 2**30


def test_check_fits_names_need_limit_and_what_to_change(monkeypatch):
    monkeypatch.setattr(memory, "device_bytes", lambda device=None: (8 * GIB, "a test GPU"))
    config = build_config(tiny_config(loss_chunk_size=0, compute_dtype="bfloat16"))
    advice = memory.advice(config)
    memory.check_fits({"train step": 4 * GIB, "eval step": None}, advice)  # fits
    with pytest.raises(ConfigError) as err:
        memory.check_fits({"train step": 4 * GIB, "eval step": 12 * GIB}, advice)
    message = str(err.value)
    assert message.startswith("the eval step needs 12.00 GiB per device but a test GPU has "
                              "8.00 GiB: ")
    for hint in ("loss_chunk_size=4096", "acc_steps", "remat=full", "residual_dtype=bfloat16",
                 "sequence_length"):
        assert hint in message
    assert "\n" not in message


def test_oversized_config_stops_before_training(tmp_path, shakespeare_dir, capsys):
    """A sequence length whose attention scores alone need terabytes (8 x 4 heads x 80,000^2
    float32 scores: 0.8 TB per copy): refused after compiling, before any state is allocated or
    data read, without an XLA traceback. 80,000 tokens fit in the corpus's validation split
    (88,015), so the check that a sequence fits the data, which runs before compiling, passes."""
    from minillm_jax.train.trainer import train

    config = tiny_config(data_dir=shakespeare_dir, workdir=str(tmp_path / "big"),
                         sequence_length=80_000, attention_impl="xla")
    with pytest.raises(ConfigError, match=r"the train step needs [\d.]+ GiB per device but the "
                                          r"host's RAM has [\d.]+ GiB: .*sequence_length"):
        train(config)
    assert "step 1/" not in capsys.readouterr().out
