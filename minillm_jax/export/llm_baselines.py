"""epfml/llm-baselines (LauzHack-era code, docs/llm-baselines.md#state-dict-names-and-shapes): state dicts, args, checkpoints.

Export writes `torch.save(state_dict)` with llm-baselines' exact keys, shapes and dtype (float32),
`transformer.wte.weight` and `lm_head.weight` being the same tensor (as in the tied torch model),
and a JSON of the matching command-line arguments, e.g.

    python src/main.py --config_format base --model llama2 --n_layer 2 ... ; then in python:
    model.load_state_dict(torch.load("model.pt"), strict=True)

Untied models are refused: the LauzHack code always ties wte and lm_head, so loading two distinct
tensors there would silently keep only lm_head. Use the Hugging Face export for untied models.

Import accepts a bare state dict, a checkpoint dict with a 'model' key (ckpt.pt, ckpt_<itr>.pt,
HEAD's main.pt), and keys prefixed by torch.compile's `_orig_mod.` or DDP's `module.`.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shlex
from collections import OrderedDict
from typing import Any, Mapping

import ml_collections

from minillm_jax import config as config_lib
from minillm_jax.config import TrainConfig, build_config
from minillm_jax.export.architectures import LLM_BASELINES
from minillm_jax.export.core import export_arrays, import_arrays
from minillm_jax.export.errors import ConversionError

FORMAT = LLM_BASELINES
MODEL_NAMES = {"gpt": "base", "llama": "llama2"}  # our name -> llm-baselines --model
# llm-baselines args copied 1:1 into our config (same names, same meaning).
ARCH_ARGS = ("n_layer", "n_embd", "n_head", "vocab_size", "sequence_length", "bias", "dropout")
LLAMA_ARGS = ("rmsnorm_eps", "multiple_of")
TRAIN_ARGS = ("lr", "weight_decay", "beta1", "beta2", "grad_clip", "warmup_percent", "batch_size",
              "acc_steps", "iterations", "seed", "data_seed", "eval_freq")
LLM_BASELINES_SCHEDULERS = {"cos": "cos", "linear": "linear", "constant": "none"}
_PREFIXES = ("_orig_mod.", "module.")
# Non-parameter buffers some llm-baselines variants put in state dicts: GPT's causal-mask buffer
# (only without flash attention, torch < 2) and a persisted RoPE table.
_BUFFERS = (re.compile(r"^transformer\.h\.\d+\.attn\.bias$"), re.compile(r"(^|\.)freqs_cis$"))


# --------------------------------------------------------------------------- export


def args_for(config: ml_collections.ConfigDict | TrainConfig) -> tuple[dict[str, Any], list[str]]:
    """llm-baselines command-line arguments (name -> value) of a run config, and notes."""
    config = build_config(config)
    cfg, optim, flat = config.model, config.optim, config.to_dict()
    notes = []
    args: dict[str, Any] = {"model": MODEL_NAMES[cfg.model]}
    args.update({k: getattr(cfg, k) for k in ARCH_ARGS})
    if cfg.model == "llama":
        args.update({k: getattr(cfg, k) for k in LLAMA_ARGS})
    args.update({k: flat[k] for k in TRAIN_ARGS})
    if optim.scheduler in LLM_BASELINES_SCHEDULERS:
        args["scheduler"] = LLM_BASELINES_SCHEDULERS[optim.scheduler]
    else:
        notes.append(f"scheduler {optim.scheduler!r} has no llm-baselines equivalent: not in the "
                     "args")
    if optim.div_factor != 100.0 or optim.final_div_factor != 0.1:
        notes.append("div_factor/final_div_factor differ from llm-baselines' hard-coded 100/0.1")
    if config.data.dataset == "slimpajama":
        args["dataset"] = "slimpajama"
    return args, notes


def command_for(args: Mapping[str, Any]) -> str:
    """The llm-baselines command line for `args` (`--bias False` would parse as True: omitted)."""
    parts = ["python", "src/main.py", "--config_format", "base"]
    for key, value in args.items():
        if isinstance(value, bool):
            if value:
                parts += [f"--{key}", "True"]
            continue
        parts += [f"--{key}", str(value)]
    return " ".join(shlex.quote(p) for p in parts)


def to_torch(params: Mapping[str, Any], config: ml_collections.ConfigDict,
             ) -> tuple["OrderedDict[str, Any]", list[str]]:
    """Our params -> (llm-baselines state dict of float32 torch tensors, notes). The tied
    wte/lm_head entries are one shared tensor, as in the torch model's state_dict()."""
    import torch

    arrays, notes = export_arrays(params, config, FORMAT)
    tensors: dict[int, Any] = {}
    state_dict = OrderedDict()
    for key, array in arrays.items():
        if id(array) not in tensors:
            tensors[id(array)] = torch.from_numpy(array)
        state_dict[key] = tensors[id(array)]
    return state_dict, notes


def save(params: Mapping[str, Any], config: ml_collections.ConfigDict, out: str,
         args_out: str | None = None) -> tuple[str, str, list[str]]:
    """Writes the state dict to `out` and the args JSON next to it (<out stem>.args.json).
    Returns (state dict path, args path, notes)."""
    import torch

    state_dict, notes = to_torch(params, config)
    args, arg_notes = args_for(config)
    args_out = args_out or os.path.splitext(out)[0] + ".args.json"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    torch.save(state_dict, out)
    with open(args_out, "w") as f:
        json.dump(args, f, indent=2)
        f.write("\n")
    return out, args_out, notes + arg_notes


# --------------------------------------------------------------------------- import


def extract_state_dict(obj: Any) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """(state dict with prefixes stripped, checkpoint metadata such as 'itr', notes) of what
    torch.load returned: a state dict or a checkpoint dict with a 'model' key."""
    import torch

    meta: dict[str, Any] = {}
    notes: list[str] = []
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        meta = {k: v for k, v in obj.items() if k == "itr" and isinstance(v, int)}
        obj = obj["model"]
    if not isinstance(obj, Mapping):
        raise ConversionError(f"expected a state dict (or a dict with a 'model' key), got "
                              f"{type(obj).__name__}")
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ConversionError("not a state dict: these entries are not tensors: " + ", ".join(bad))
    out: dict[str, Any] = {}
    clashes = []
    for key, value in obj.items():
        name = key
        while name.startswith(_PREFIXES):
            name = name.split(".", 1)[1]
        if any(p.search(name) for p in _BUFFERS) and value.dim() != 1:
            notes.append(f"ignored non-parameter buffer {key}")
            continue
        if name in out:
            clashes.append(f"{key} -> {name}")
        out[name] = value
    if clashes:
        raise ConversionError("keys collide after stripping _orig_mod./module. prefixes: "
                              + ", ".join(clashes))
    return out, meta, notes


def load_file(path: str, trust_pickle: bool = False) -> tuple[dict[str, Any], dict[str, Any],
                                                              list[str]]:
    """torch.load a state dict / checkpoint file on CPU (weights only unless trust_pickle)."""
    import torch

    if not os.path.isfile(path):
        raise ConversionError(f"state dict file {path!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConversionError(
            f"{path} holds more than tensors ({first}). llm-baselines ckpt_<itr>.pt files also "
            "store RNG states; if you trust the file, pass --trust-pickle to unpickle it fully"
        ) from err
    except (RuntimeError, EOFError, OSError) as err:
        raise ConversionError(f"cannot read {path} with torch.load: {err}") from err
    return extract_state_dict(obj)


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConversionError(f"argument {name}={value!r} is not a boolean")


def config_from_args(args: Mapping[str, Any], base: ml_collections.ConfigDict,
                     untied: bool | None = None) -> ml_collections.ConfigDict:
    """Our run config: `base` with the fields that llm-baselines `args` (flat, or nested under
    'args' as in summary.json) set. Refuses llm-baselines HEAD options we cannot represent."""
    if "args" in args and isinstance(args["args"], Mapping):
        args = args["args"]
    config = ml_collections.ConfigDict(base.to_dict())
    if "model" in args:
        name = str(args["model"])
        if name not in config_lib.MODEL_ALIASES:
            raise ConversionError(f"unknown architecture --model {name!r}: the converter knows "
                                  f"{sorted(config_lib.MODEL_ALIASES)}")
        config.model = config_lib.MODEL_ALIASES[name]
    unsupported = []
    if _as_bool("parallel_block", args.get("parallel_block", False)):
        unsupported.append("parallel_block=True")
    if args.get("moe"):
        unsupported.append(f"moe={args['moe']}")
    if float(args.get("mlp_dim_exp_factor", 1.0)) != 1.0:
        unsupported.append(f"mlp_dim_exp_factor={args['mlp_dim_exp_factor']}")
    if unsupported:
        raise ConversionError("llm-baselines options with no equivalent in our model: "
                              + ", ".join(unsupported))
    for key in ARCH_ARGS + LLAMA_ARGS + TRAIN_ARGS + ("init_std",):
        if key not in args or args[key] is None or key not in config:
            continue
        if isinstance(config[key], bool):
            config[key] = _as_bool(key, args[key])
            continue
        try:
            config[key] = type(config[key])(args[key])
        except (TypeError, ValueError) as err:
            raise ConversionError(f"argument {key}={args[key]!r} is not a valid "
                                  f"{type(config[key]).__name__}: {err}") from err
    if args.get("scheduler") in ("cos", "linear", "none"):
        config.scheduler = "constant" if args["scheduler"] == "none" else args["scheduler"]
    if args.get("dataset") == "slimpajama":
        config.dataset = "slimpajama"
    if untied is None:  # HEAD's --untied_embeds, else whatever `base` says
        untied = (_as_bool("untied_embeds", args.get("untied_embeds", False))
                  or not config.tie_embeddings)
    config.tie_embeddings = not untied
    try:
        config_lib.build_config(config)
    except config_lib.ConfigError as err:
        raise ConversionError(f"the resulting config is invalid: {err}") from err
    return config


def from_torch(state_dict: Mapping[str, Any], config: ml_collections.ConfigDict) -> dict:
    """llm-baselines state dict -> our float32 params (nested dict of numpy arrays)."""
    return import_arrays(state_dict, config, FORMAT)
