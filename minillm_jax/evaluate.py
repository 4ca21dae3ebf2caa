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
    import jax
    import ml_collections

    from minillm_jax import checkpointing, data, sharding
    from minillm_jax.model import abstract_params, build_model
    from minillm_jax.trainer import Evaluator

    checkpointing.quiet_orbax_logs()
    saved, step = checkpointing.load_config(workdir, step)
    config = ml_collections.ConfigDict(saved.to_dict())
    if data_dir:
        config.data_dir = data_dir
    if batch_size:
        config.eval_batch_size = batch_size
    if not config.get("eval_batch_size"):
        config.eval_batch_size = config.batch_size
    data.ensure_dataset(config.dataset, config.data_dir)
    mesh = sharding.make_mesh(-1, 1)
    sharding.check_batch(config.eval_batch_size, mesh, "eval_batch_size")
    model = build_model(config)
    abstract = abstract_params(model)
    shardings = sharding.tree_shardings(mesh, abstract)
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, shardings)
    params = checkpointing.restore_params(workdir, step, target)
    result = Evaluator(config, model, mesh, shardings)(params, max_batches)
    result.update(step=step, data_dir=config.data_dir)
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
    from minillm_jax.checkpointing import CheckpointError
    from minillm_jax.config import ConfigError
    from minillm_jax.data import DataError
    from minillm_jax.trainer import format_eval

    try:
        result = evaluate(args.workdir, args.step, args.data, args.batch_size, args.max_batches)
    except (CheckpointError, ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"step {result['step']} | {format_eval(result)}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
