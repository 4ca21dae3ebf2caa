"""Validation loss, perplexity, accuracy and bits per byte of a model's parameters."""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp

from minillm_jax import data
from minillm_jax.train import sharding
from minillm_jax.train.build import Run


class Evaluator:
    """Validation metrics over fixed batches, token-weighted.

    Periodic evals always use the same first `eval_batches` batches, so their values are
    comparable across steps (llm-baselines used the next 24 batches each time); the final eval
    covers the whole validation set.
    """

    def __init__(self, run: Run, step: Callable | None = None):
        """`step`: the run's eval step, e.g. compiled ahead of time (default: run.eval_step())."""
        self.mesh = run.mesh
        self.data_dir = run.config.data.data_dir
        self.batch_size = run.config.data.eval_batch_size
        self.seq_len = run.config.model.sequence_length
        self.meta = data.load_meta(self.data_dir)
        self._step = step or run.eval_step()

    def __call__(self, params: Any, max_batches: int | None) -> dict[str, float]:
        start = time.perf_counter()
        sums, batches = None, 0
        for batch in data.iter_val_batches(
                self.data_dir, batch_size=self.batch_size, seq_len=self.seq_len,
                max_batches=max_batches, process_index=jax.process_index(),
                process_count=jax.process_count()):
            out = self._step(params, sharding.to_global(batch, self.mesh, batch_axis=0))
            sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
            batches += 1
        sums = jax.device_get(sums)
        tokens = float(sums["tokens"])
        loss = float(sums["loss_sum"]) / tokens
        result = {"val_loss": loss, "val_perplexity": math.exp(loss),
                  "val_acc": float(sums["correct_sum"]) / tokens, "val_tokens": int(tokens)}
        # Any further eval-step outputs (e.g. MoE router statistics) are per-batch means.
        for key in sorted(set(sums) - {"loss_sum", "correct_sum", "tokens"}):
            result[key] = float(sums[key]) / batches
        val = self.meta.get("val", {})
        if val.get("bytes") and val.get("tokens"):
            result["val_bpb"] = loss / math.log(2) * val["tokens"] / val["bytes"]
        result["val_time_s"] = time.perf_counter() - start
        return result


def format_eval(result: dict[str, float]) -> str:
    text = (f"val loss {result['val_loss']:.4f} | ppl {result['val_perplexity']:.2f} | "
            f"acc {100 * result['val_acc']:.2f}%")
    if "val_bpb" in result:
        text += f" | bpb {result['val_bpb']:.4f}"
    rate = result["val_tokens"] / max(result["val_time_s"], 1e-9)
    seconds = result["val_time_s"]
    return text + f" | {result['val_tokens']:,} tokens in {seconds:.1f}s ({rate:,.0f}/s)"
