"""Export a checkpoint to PyTorch: an llm-baselines state dict (+ args JSON) or a Hugging Face dir.

    python -m minillm_jax.export.to_torch --workdir runs/demo [--step N] --format llm-baselines --out model.pt
        writes model.pt (llm-baselines keys, shapes, float32; wte and lm_head both present) and
        model.args.json (the matching llm-baselines arguments); load it in llm-baselines with
        model.load_state_dict(torch.load("model.pt"), strict=True)
    python -m minillm_jax.export.to_torch --workdir runs/demo --format hf --out hf_model/
        writes config.json + model.safetensors (+ GPT-2 tokenizer files when vocab_size >= 50257).
        Where a stock transformers class computes the model exactly (GPT2LMHeadModel,
        LlamaForCausalLM, Qwen3ForCausalLM, ArceeForCausalLM) it is that class:
        transformers.AutoModelForCausalLM.from_pretrained("hf_model") loads it without custom
        code. Otherwise (e.g. the modern recipe's QK-norm + ReLU^2 Llama, soft-capped logits) it
        also writes configuration_minillm.py + modeling_minillm.py: load it with
        from_pretrained("hf_model", trust_remote_code=True). The first note says which and why;
        --custom-code writes the custom code even where a stock class fits.

Models the target cannot express exactly are refused (exit status 2), e.g. untied embeddings for
llm-baselines (use --format hf). tools/convert_to_torch.py runs this module.
"""

from __future__ import annotations

import argparse
import os
import sys


def _load(workdir: str, step: int | None, fmt: str):
    from minillm_jax import export
    from minillm_jax.train import checkpointing
    from minillm_jax.train import rundir
    from minillm_jax.export import ConversionError

    ckpt_dir = rundir.checkpoint_dir(workdir)
    steps = sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit()) if os.path.isdir(
        ckpt_dir) else []
    if not steps:
        raise ConversionError(f"no checkpoint in {ckpt_dir}: pass the run's workdir")
    if step is not None and step not in steps:
        raise ConversionError(f"no checkpoint for step {step} in {ckpt_dir}; steps: {steps}")
    saved, _ = checkpointing.load_config_dict(workdir, step)
    # an unknown architecture (or unreadable model fields) is refused before restoring weights
    export.architectures.lookup(export.model_config(saved), fmt)
    return checkpointing.load_params(workdir, step)


def run(args: argparse.Namespace) -> None:
    from minillm_jax import export

    config, params, step = _load(args.workdir, args.step, args.format)
    source = {"workdir": os.path.abspath(args.workdir), "step": int(step)}
    if args.format == export.LLM_BASELINES:
        out, args_out, notes = export.llm_baselines.save(params, config, args.out, args.args_out)
        import json

        with open(args_out) as f:
            cli = export.llm_baselines.command_for(json.load(f))
        print(f"wrote {out} and {args_out} (step {step})")
        print(f"llm-baselines: {cli}")
    else:
        written, notes = export.hf.save(params, config, args.out, tokenizer=not args.no_tokenizer,
                                        source=source, custom_code=args.custom_code)
        print(f"wrote {args.out}: {', '.join(written)} (step {step})")
    for note in notes:
        print(f"note: {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minillm_jax.export.to_torch",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="run directory holding checkpoints/")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    parser.add_argument("--format", required=True, choices=["llm-baselines", "hf"])
    parser.add_argument("--out", required=True,
                        help="llm-baselines: the .pt file; hf: the model directory")
    parser.add_argument("--args-out", default=None,
                        help="llm-baselines args JSON (default: <out without .pt>.args.json)")
    parser.add_argument("--no-tokenizer", action="store_true", help="hf: skip tokenizer files")
    parser.add_argument("--custom-code", action="store_true",
                        help="hf: write the custom-code MiniLLMForCausalLM even where a stock "
                             "transformers class computes the model")
    args = parser.parse_args(argv)

    from minillm_jax.config.cli import run_command
    from minillm_jax.export import ConversionError

    return run_command(lambda: run(args), ConversionError)


if __name__ == "__main__":
    sys.exit(main())
