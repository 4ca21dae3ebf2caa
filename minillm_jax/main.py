"""Train a model from a config file.

    python -m minillm_jax.main --config configs/demo.py [--config.FIELD=VALUE ...]

Overrides are typed by ml_collections (minillm_jax/config/cli.py). A missing dependency, a
configuration, data, checkpoint or training problem is reported as one `error: ...` line on
stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from minillm_jax import deps


def main(argv: Sequence[str] | None = None) -> int:
    deps.require()  # before anything imports ml_collections, grain or JAX
    from minillm_jax.config.cli import parse_config_args, run_command

    parser = argparse.ArgumentParser(prog="python -m minillm_jax.main",
                                     description=__doc__.strip().splitlines()[0])
    _, config, name = parse_config_args(parser, argv)
    from absl import logging

    logging.set_verbosity(logging.WARNING)  # orbax and jax log every file operation at INFO
    from minillm_jax.train.checkpointing import CheckpointError
    from minillm_jax.config import ConfigError
    from minillm_jax.data import DataError
    from minillm_jax.train.trainer import TrainingError, train

    return run_command(lambda: train(config, name=name),
                       (CheckpointError, ConfigError, DataError, TrainingError))


if __name__ == "__main__":
    sys.exit(main())
