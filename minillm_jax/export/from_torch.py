"""Import an llm-baselines PyTorch state dict as a checkpoint of ours (to evaluate or continue it).

    python -m minillm_jax.export.from_torch --state-dict ckpt.pt --args model.args.json --workdir runs/imported
    python -m minillm_jax.export.from_torch --state-dict ckpt.pt --config configs/llama_baseline.py --workdir OUT

--state-dict: a state dict, or a checkpoint dict with a 'model' key (llm-baselines ckpt.pt,
  ckpt_<itr>.pt, HEAD main.pt); `_orig_mod.` (torch.compile) and `module.` (DDP) prefixes are
  stripped. Files with more than tensors (RNG states) need --trust-pickle.
--args: llm-baselines arguments as JSON (flat, or summary.json's {"args": {...}}); fields it sets
  override --config (default configs/base.py).
The checkpoint is written with step = the checkpoint's 'itr' (else 0) unless --step is given;
resuming it starts a fresh optimizer state. Mismatched keys or shapes are listed and refused
(exit status 2). tools/convert_from_torch.py runs this module.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def build_config(args: argparse.Namespace):
    from minillm_jax import config as config_lib
    from minillm_jax.export import ConversionError, llm_baselines

    if not args.args and not args.config:
        raise ConversionError("pass --args (llm-baselines arguments JSON) and/or --config")
    try:
        config = config_lib.load_config(args.config or config_lib.BASE_CONFIG)
    except config_lib.ConfigError as err:
        raise ConversionError(str(err)) from err
    untied = True if args.untied else None
    if args.args:
        try:
            with open(args.args) as f:
                baseline_args = json.load(f)
        except (OSError, json.JSONDecodeError) as err:
            raise ConversionError(f"cannot read --args {args.args}: {err}") from err
        return llm_baselines.config_from_args(baseline_args, config, untied=untied)
    return llm_baselines.config_from_args({}, config, untied=untied)


def run(args: argparse.Namespace) -> None:
    from minillm_jax.train import checkpointing
    from minillm_jax.train import rundir
    from minillm_jax.export import ConversionError, llm_baselines

    ckpt_dir = rundir.checkpoint_dir(args.workdir)
    if os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir):
        raise ConversionError(f"{ckpt_dir} already holds checkpoints: choose an empty --workdir")
    config = build_config(args)
    state_dict, meta, notes = llm_baselines.load_file(args.state_dict, args.trust_pickle)
    params = llm_baselines.from_torch(state_dict, config)
    step = args.step if args.step is not None else int(meta.get("itr", 0))
    config.workdir = args.workdir
    path = checkpointing.save_params(args.workdir, config, params, step)
    for note in notes:
        print(f"note: {note}")
    print(f"wrote {path} ({config.model}, {config.n_layer} layers, n_embd {config.n_embd}, "
          f"step {step})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minillm_jax.export.from_torch",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--state-dict", required=True, help="llm-baselines .pt file")
    parser.add_argument("--args", default=None, help="llm-baselines arguments JSON")
    parser.add_argument("--config", default=None, help="our config file (configs/*.py)")
    parser.add_argument("--workdir", required=True, help="output run directory")
    parser.add_argument("--step", type=int, default=None,
                        help="checkpoint step (default: the file's 'itr', else 0)")
    parser.add_argument("--untied", action="store_true",
                        help="import distinct wte/lm_head (HEAD --untied_embeds) untied")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="unpickle non-tensor content (only for files you trust)")
    args = parser.parse_args(argv)

    from minillm_jax.config.cli import run_command
    from minillm_jax.export import ConversionError

    return run_command(lambda: run(args), ConversionError)


if __name__ == "__main__":
    sys.exit(main())
