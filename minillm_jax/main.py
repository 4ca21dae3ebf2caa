"""Command line: python -m minillm_jax.main --config configs/demo.py [--config.FIELD=VALUE ...]"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file in configs/.",
                                          lock_config=True)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # orbax and jax log every file operation at INFO
    from minillm_jax.checkpointing import CheckpointError
    from minillm_jax.config import ConfigError
    from minillm_jax.data import DataError
    from minillm_jax.trainer import TrainingError, train

    name = os.path.splitext(os.path.basename(config_flags.get_config_filename(flags.FLAGS["config"])))[0]
    try:
        train(_CONFIG.value, name=name)
    except (CheckpointError, ConfigError, DataError, TrainingError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    flags.mark_flag_as_required("config")
    app.run(main)
