"""Evaluate a checkpoint on the validation set.

    python -m minillm_jax.evaluate --workdir runs/demo [--step N] [--data DATA_DIR]
        [--batch-size B] [--max-batches N]

Prints validation loss, perplexity, accuracy and bits per byte (when the prepared data records
its byte count) over the whole validation set (or its first --max-batches batches), then the same
values as one JSON line. It uses the trainer's Evaluator and eval step, so the numbers equal the
run's final eval. Works on CPU for small models; the parameters are restored onto the devices
present (data-parallel over all of them).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def evaluate(workdir: str, step: int | None = None, data_dir: str | None = None,
             batch_size: int | None = None, max_batches: int | None = None) -> dict[str, Any]:
    """Evaluation of checkpoint `step` (newest if None) of the run in `workdir`."""
    import dataclasses

    from minillm_jax import data
    from minillm_jax.train import checkpointing
    from minillm_jax.train.build import build_run
    from minillm_jax.train.evaluator import Evaluator

    checkpointing.quiet_orbax_logs()
    config, step = checkpointing.load_config(workdir, step)
    data_config = dataclasses.replace(config.data, data_dir=data_dir or config.data.data_dir,
                                      eval_batch_size=batch_size or config.data.eval_batch_size)
    # data-parallel over the devices present, whatever mesh the run trained on
    execution = dataclasses.replace(config.execution, mesh_data=-1, mesh_fsdp=1)
    config = config.replace(data=data_config, execution=execution)
    data.ensure_dataset(config.data.dataset, config.data.data_dir)
    # tokens the model has no embedding for are refused; a content changed since prepare is
    # only reported (evaluating on other data is a choice, not damage)
    for note in data.check_data(config.data.data_dir, config.model.vocab_size,
                                allow_change=True)[1]:
        print(note, file=sys.stderr)
    run = build_run(config)
    params = checkpointing.restore_params(workdir, step, run.abstract_state.params)
    result = Evaluator(run)(params, max_batches)
    result.update(step=step, data_dir=config.data.data_dir)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minillm_jax.evaluate",
                                     description=__doc__.strip().splitlines()[0])
    parser.add_argument("--workdir", required=True, help="the run directory (holds checkpoints/)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default newest)")
    parser.add_argument("--data", default=None,
                        help="prepared data directory (default: the run's data_dir)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="sequences per eval batch (default: the run's eval_batch_size)")
    parser.add_argument("--max-batches", type=int, default=None,
                        help="evaluate only the first N batches (default: all)")
    args = parser.parse_args(argv)
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    from minillm_jax.train.checkpointing import CheckpointError
    from minillm_jax.config import ConfigError
    from minillm_jax.data import DataError
    from minillm_jax.train.evaluator import format_eval

    from minillm_jax.config.cli import run_command

    def work() -> None:
        result = evaluate(args.workdir, args.step, args.data, args.batch_size, args.max_batches)
        print(f"step {result['step']} | {format_eval(result)}")
        print(json.dumps(result))

    return run_command(work, (CheckpointError, ConfigError, DataError))


if __name__ == "__main__":
    sys.exit(main())
