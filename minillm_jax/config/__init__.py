"""Run configuration: the ml_collections file the user writes, turned into typed, checked parts.

    files.py    executing configs/*.py files; configs/base.py, where every default lives
    schema.py   the five frozen parts of a TrainConfig, each checking its own fields
    platforms.py  how the "auto" execution fields resolve on a device platform
    build.py    build_config (flat config -> TrainConfig, every bad field at once), device checks
    checks.py   ConfigError and the single-value checks; the sgdr arithmetic they need
    cli.py      `--config FILE --config.FIELD=VALUE` for argparse; run_command for every command

This package is the config API the rest of the code (and config files) import from; it imports
nothing of the model, the optimizers or the trainer.
"""

from minillm_jax.config.build import build_config, check_devices, check_sequence_fits
from minillm_jax.config.checks import MAX_SGDR_CYCLES, ConfigError, check_schedule, sgdr_cycles
from minillm_jax.config.files import BASE_CONFIG, base_defaults, exec_python_file, load_config
from minillm_jax.config.platforms import (ACCELERATOR_PLATFORMS, COMPUTE_DTYPES, DENSE_WEIGHT_GRADS,
                                          resolve_compute_dtype, resolve_dense_weight_grad)
from minillm_jax.config.schema import (ATTENTION_ALIASES, ATTENTION_IMPLS,
                                       MLP_ACTIVATIONS,
                                       MODEL_ALIASES, MOE_IMPLS, MOE_PRIORITIES,
                                       MUON_NS_COEFFICIENTS, OPTIMIZERS, PARTS,
                                       REMAT_POLICIES, SCHEDULER_ALIASES, SCHEDULERS,
                                       SUBLAYER_KINDS, WSD_SHAPES, DataConfig, ExecutionConfig,
                                       ModelConfig, OptimConfig, RunConfig, TrainConfig)

__all__ = [
    "ACCELERATOR_PLATFORMS", "ATTENTION_ALIASES", "ATTENTION_IMPLS", "BASE_CONFIG",
    "COMPUTE_DTYPES", "DENSE_WEIGHT_GRADS", "MAX_SGDR_CYCLES", "MLP_ACTIVATIONS", "MODEL_ALIASES",
    "MOE_IMPLS",
    "MOE_PRIORITIES", "MUON_NS_COEFFICIENTS", "OPTIMIZERS", "PARTS", "REMAT_POLICIES", "SCHEDULERS", "SCHEDULER_ALIASES",
    "SUBLAYER_KINDS", "WSD_SHAPES", "ConfigError", "DataConfig", "ExecutionConfig", "ModelConfig",
    "OptimConfig", "RunConfig", "TrainConfig", "base_defaults", "build_config", "check_devices",
    "check_schedule", "check_sequence_fits", "exec_python_file", "load_config",
    "resolve_compute_dtype", "resolve_dense_weight_grad", "sgdr_cycles",
]
