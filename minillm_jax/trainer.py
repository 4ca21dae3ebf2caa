"""The training loop: build, compile once, train with async dispatch, evaluate, checkpoint, sample."""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from minillm_jax import checkpointing, data, sharding
from minillm_jax import config as config_lib
from minillm_jax.metrics import MetricsWriter
from minillm_jax.model import ModelConfig, build_model, num_params
from minillm_jax.optim import build_optimizer, eval_params, plateau_observe
from minillm_jax.train_step import TrainState, init_state, make_eval_step, make_train_step


class TrainingError(RuntimeError):
    """The run cannot continue (e.g. the loss became NaN); the message says what was kept."""


def log(message: str) -> None:
    if jax.process_index() == 0:
        print(message, flush=True)


def maybe_initialize_distributed() -> None:
    """Multi-host: jax.distributed.initialize() when the launcher set up a coordinator
    (JAX_COORDINATOR_ADDRESS, or cluster environments JAX detects itself: SLURM, TPU pods)."""
    wants = os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("MINILLM_DISTRIBUTED")
    if wants and not jax.distributed.is_initialized():
        jax.distributed.initialize()


def _format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _memory_report(compiled: Any) -> str:
    try:
        mem = compiled.memory_analysis()
    except Exception:  # not every backend reports it
        return "memory estimate unavailable"
    if mem is None:
        return "memory estimate unavailable"
    gib = lambda n: n / 2**30  # noqa: E731
    total = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
             - getattr(mem, "alias_size_in_bytes", 0))
    return (f"memory estimate {gib(total):.2f} GiB per device (arguments "
            f"{gib(mem.argument_size_in_bytes):.2f}, temporaries {gib(mem.temp_size_in_bytes):.2f})")


def prepare_workdir(workdir: str) -> None:
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, ".write_test")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as err:
        raise config_lib.ConfigError(
            f"config.workdir={workdir!r} is not writable ({err.strerror}): choose another "
            "directory with --config.workdir=DIR") from None


class Evaluator:
    """Validation loss / perplexity / accuracy (/ bits per byte) over fixed batches, token-weighted.

    Periodic evals always use the same first `eval_batches` batches, so their values are
    comparable across steps (llm-baselines LZ used the next 24 batches each time); the final eval
    covers the whole validation set.
    """

    def __init__(self, config: ml_collections.ConfigDict, model: Any, mesh: Any,
                 param_shardings: Any):
        self.config, self.mesh = config, mesh
        self.meta = data.load_meta(config.data_dir)
        self._step = jax.jit(make_eval_step(model), in_shardings=(
            param_shardings, {k: sharding.batch_sharding(mesh, 2, 0) for k in ("x", "y", "mask")}),
            out_shardings=sharding.replicated(mesh))

    def __call__(self, params: Any, max_batches: int | None) -> dict[str, float]:
        c = self.config
        sums, batches = None, 0
        for batch in data.iter_val_batches(
                c.data_dir, batch_size=c.eval_batch_size,
                seq_len=c.sequence_length, max_batches=max_batches,
                process_index=jax.process_index(), process_count=jax.process_count()):
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
        return result


class TimeBudget:
    """A wall-clock budget (config.budget_minutes) with the lr schedule's horizon in time.

    The run stops when the budget minus a reserve for the final evaluation and save is spent.
    After `budget_warmup_steps` steps it measures wall time per step (evaluations included) and
    sets the schedule's horizon to the steps that fit; it keeps re-measuring at every
    `log_freq`-th step and moves the horizon again when the estimate drifts by more than
    `budget_tolerance`, so the decay ends at the budget. No llm-baselines option does this.
    """

    def __init__(self, config: ml_collections.ConfigDict, compile_s: float):
        self.config = config
        self.started = time.perf_counter()
        self.horizon_steps = config.iterations
        full_batches = data.num_val_batches(config.data_dir, batch_size=config.eval_batch_size,
                                            seq_len=config.sequence_length)
        eval_batches = full_batches if config.final_full_eval else min(
            full_batches, config.eval_batches)
        # The final eval costs about eval_batches forward passes of one step's micro-batch
        # (a third of a training step each); this bound is refined by measurement below.
        self.eval_share = eval_batches * config.eval_batch_size / max(
            3 * config.batch_size * config.acc_steps, 1)
        self.step_time_s = 0.0
        self.reserve_s = 0.02 * 60 * config.budget_minutes
        self._resized = 0
        self.compile_s = compile_s  # cost of one compile, updated when one happens
        self._mark_time, self._mark_steps = self.started, 0

    def expired(self) -> bool:
        deadline = self.started + 60 * self.config.budget_minutes - self.reserve_s
        return time.perf_counter() >= deadline

    def horizon(self, start: int, steps_done: int) -> int | None:
        """A new schedule horizon (total steps) when it should move, else None."""
        c = self.config
        warmup = c.get("budget_warmup_steps", 5)
        if steps_done < warmup or (steps_done > warmup and steps_done % c.log_freq):
            return None
        now = time.perf_counter()
        elapsed = now - self.started
        if steps_done - self._mark_steps < warmup:
            return None
        # wall time per step since the last horizon change (recompiles excluded, reacts to drift)
        self.step_time_s = (now - self._mark_time) / (steps_done - self._mark_steps)
        self.reserve_s = max(5.0, 2.0 * self.eval_share * self.step_time_s + 5.0)
        left = 60 * c.budget_minutes - self.reserve_s - elapsed

        def steps_that_fit(seconds: float) -> int:
            return min(start + steps_done + max(int(seconds / self.step_time_s), 1),
                       c.iterations)

        # Is the current horizon still right (ignoring a recompile we would not do)?
        drift = abs(steps_that_fit(left) - self.horizon_steps) / max(self.horizon_steps, 1)
        if drift <= c.get("budget_tolerance", 0.02) or self._resized >= 8:
            return None
        left -= self.compile_s  # moving the horizon costs a recompile, paid from the budget
        if left < self.compile_s:  # too late for a recompile to pay for itself
            return None
        fits = steps_that_fit(left)
        self._resized += 1
        self.horizon_steps = fits
        return fits

    def mark(self, steps_done: int) -> None:
        """Restart the step-time measurement (after a recompile)."""
        self._mark_time, self._mark_steps = time.perf_counter(), steps_done


def format_eval(result: dict[str, float]) -> str:
    text = (f"val loss {result['val_loss']:.4f} | ppl {result['val_perplexity']:.2f} | "
            f"acc {100 * result['val_acc']:.2f}%")
    if "val_bpb" in result:
        text += f" | bpb {result['val_bpb']:.4f}"
    return text + f" | {result['val_tokens']:,} tokens"


def train(config: ml_collections.ConfigDict, name: str = "run") -> dict[str, Any]:
    """Trains `config` to config.iterations (or the last checkpoint's step onward); returns the
    final evaluation plus run facts."""
    config = config_lib.resolve(config, name)
    config_lib.validate(config)
    maybe_initialize_distributed()
    mesh = sharding.make_mesh(config.mesh_data, config.mesh_fsdp)
    sharding.check_batch(config.batch_size, mesh)
    sharding.check_batch(config.eval_batch_size, mesh, "eval_batch_size")
    prepare_workdir(config.workdir)
    checkpointing.quiet_orbax_logs()
    checkpointing.prepare_run(config.workdir, config.get("resume", True),
                              config.get("overwrite", False))
    data.ensure_dataset(config.dataset, config.data_dir)

    model = build_model(config)
    tx, schedule = build_optimizer(config)
    abstract_state = jax.eval_shape(lambda: init_state(model, tx, config.seed))
    state_shardings = sharding.tree_shardings(mesh, abstract_state)
    state_shardings = state_shardings.replace(
        step=sharding.replicated(mesh), rng=sharding.replicated(mesh))
    # MoE: total and active parameter counts (params_info.describe; dense: "N parameters").
    from minillm_jax.params_info import describe as describe_params
    log(f"model {config.model}: {describe_params(abstract_state.params, ModelConfig.from_config(config))}"
        f" | mesh {dict(mesh.shape)} on {jax.device_count()} {jax.devices()[0].platform}"
        f" device(s) | compute {config.compute_dtype}")

    batch_shape = (config.acc_steps, config.batch_size, config.sequence_length)
    batch_sharding = sharding.batch_sharding(mesh, 3, batch_axis=1)
    abstract_batch = {k: jax.ShapeDtypeStruct(batch_shape, jnp.int32, sharding=batch_sharding)
                      for k in ("x", "y")}
    sharded_abstract = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        abstract_state, state_shardings)

    def compile_step(iterations: int) -> Callable:
        """The compiled step for an lr-schedule horizon of `iterations` (the time budget moves
        it; the optimizer state's structure does not depend on it)."""
        horizon_config = ml_collections.ConfigDict(config.to_dict())
        horizon_config.iterations = iterations
        horizon_tx, horizon_schedule = build_optimizer(horizon_config)
        step_fn = jax.jit(
            make_train_step(model, horizon_tx, horizon_schedule, config.loss_chunk_size),
            in_shardings=(state_shardings, batch_sharding),
            out_shardings=(state_shardings, sharding.replicated(mesh)), donate_argnums=(0,))
        return step_fn.lower(sharded_abstract, abstract_batch).compile()

    t0 = time.perf_counter()
    compiled_step = compile_step(config.iterations)
    compile_s = time.perf_counter() - t0
    log(f"compiled train step in {time.perf_counter() - t0:.1f}s | {_memory_report(compiled_step)}")

    # Resume from the newest readable checkpoint (unreadable ones are set aside with a warning;
    # one saved for another model stops the run), else start fresh.
    manager = checkpointing.RunCheckpoints(config.workdir, keep=config.keep,
                                           keep_best=config.get("keep_best", False))
    restored = (manager.restore_latest(sharded_abstract, config)
                if config.get("resume", True) else None)
    data_state, start_step = None, 0
    if restored is not None:
        state, data_state, start_step = restored
        if state.opt_state is None:  # params-only checkpoint (e.g. imported weights)
            state = state.replace(opt_state=jax.jit(
                tx.init, out_shardings=state_shardings.opt_state)(state.params))
        log(f"resumed from {checkpointing.step_dir(config.workdir, start_step)}")
    else:
        state = jax.jit(lambda: init_state(model, tx, config.seed),
                        out_shardings=state_shardings)()
    # metrics.jsonl continues the run: drop what the resumed steps will log again
    checkpointing.trim_metrics(config.workdir, start_step)

    loader = data.TrainLoader(
        config.data_dir, batch_size=config.batch_size, seq_len=config.sequence_length,
        seed=config.data_seed, acc_steps=config.acc_steps,
        process_index=jax.process_index(), process_count=jax.process_count())
    if data_state is not None:
        loader.set_state(data_state)

    evaluator = Evaluator(config, model, mesh, state_shardings.params)
    writer = MetricsWriter(config.workdir, enabled=jax.process_index() == 0, wandb=config.wandb,
                           config=config.to_dict(), project=config.wandb_project,
                           name=config.wandb_run_name or name)
    try:
        with checkpointing.StopSignals() as stop:
            state, final = _loop(config, compiled_step, state, loader, evaluator, writer,
                                 manager, stop, compile_step, compile_s)
        manager.wait()  # the last save is complete (or its failure reported) before returning
    finally:
        try:
            manager.close()
        except checkpointing.CheckpointError as err:  # already failing: report, don't mask
            log(f"error: {err}")
        writer.close()
        loader.close()
    if manager.blocking_s:
        log(f"checkpoints: {len(manager.blocking_s)} saved in {manager.directory}; training "
            f"paused {1000 * float(np.median(manager.blocking_s)):.0f} ms per save (median; max "
            f"{1000 * max(manager.blocking_s):.0f} ms), the writes ran in the background")
    return final


def _loop(config: ml_collections.ConfigDict, step_fn: Callable, state: TrainState,
          loader: Any, evaluator: Evaluator, writer: MetricsWriter, manager: Any,
          stop: Any = None, compile_step: Callable | None = None, compile_s: float = 0.0,
          ) -> tuple[TrainState, dict[str, Any]]:
    mesh = evaluator.mesh
    start = int(jax.device_get(state.step))
    total = config.iterations
    budget = (TimeBudget(config, compile_s) if config.get("budget_minutes", 0) > 0 else None)
    stop_reason = "iterations"
    tokens_per_step = config.batch_size * config.acc_steps * config.sequence_length
    pending: tuple[int, dict] | None = None  # (step, device metrics) read one step late
    window_start, window_steps, train_time = time.perf_counter(), 0, 0.0

    def read(pending_step: int, metrics: dict) -> dict:
        values = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if not math.isfinite(values["loss"]):
            raise TrainingError(
                f"loss became {values['loss']} at step {pending_step}: stopping; the last good "
                f"checkpoint is kept in {checkpointing.checkpoint_dir(config.workdir)} "
                f"(step {manager.latest_step()}). Lower lr or enable grad_clip.")
        return values

    def report(pending_step: int, metrics: dict) -> None:
        """Reads a finished step's metrics (NaN check) and logs every log_freq steps."""
        nonlocal window_start, window_steps, train_time
        values = read(pending_step, metrics)
        window_steps += 1
        done = pending_step + 1
        if done % config.log_freq and done != total:
            return
        elapsed = time.perf_counter() - window_start
        train_time += elapsed
        rate = window_steps * tokens_per_step / max(elapsed, 1e-9)
        step_time = elapsed / max(window_steps, 1)
        log(f"step {done}/{total} | loss {values['loss']:.4f} | lr {values['lr']:.2e} | "
            f"{rate:,.0f} tok/s | {1000 * step_time:.0f} ms/step | "
            f"ETA {_format_duration((total - done) * step_time)}")
        writer.write(done, train_loss=values["loss"], lr=values["lr"],
                     grad_norm=values["grad_norm"], tokens_per_s=rate, step_time_s=step_time,
                     tokens=done * tokens_per_step)
        window_start, window_steps = time.perf_counter(), 0

    step = start
    while step < total:
        if budget is not None:
            horizon = budget.horizon(start, step - start) if step > start else None
            if budget.expired():
                total, stop_reason = step, "time budget"
                log(f"time budget of {config.budget_minutes} min spent (keeping "
                    f"{budget.reserve_s:.0f}s for the final eval and save): stopping at step {step}")
                break
            if horizon is not None and compile_step is not None:
                log(f"time budget: {budget.step_time_s * 1000:.0f} ms/step measured, lr schedule "
                    f"horizon {total} -> {horizon} steps")
                total = horizon
                compiling = time.perf_counter()
                step_fn = compile_step(total)
                budget.compile_s = time.perf_counter() - compiling
                budget.mark(step - start)
        batch = sharding.to_global(next(loader), mesh, batch_axis=1)
        state, metrics = step_fn(state, batch)  # dispatched; runs while we read the previous one
        if pending is not None:
            report(*pending)
        pending = (step, metrics)
        done = step + 1
        is_last = done == total
        ckpt_metrics = None  # with keep_best, checkpoints at eval steps are ranked by val loss
        if done % config.eval_freq == 0 and not is_last:
            report(*pending)
            pending = None
            paused = time.perf_counter()
            result = evaluator(eval_params(config, state.opt_state, state.params),
                               config.eval_batches)
            # reduce-on-plateau counts patience in evaluations (no-op without plateau)
            state = state.replace(
                opt_state=plateau_observe(config, state.opt_state, result["val_loss"]))
            log(f"eval @ {done}: {format_eval(result)}")
            writer.write(done, **result)
            window_start += time.perf_counter() - paused  # keep eval out of tokens/s
            if config.get("keep_best", False):
                ckpt_metrics = {checkpointing.BEST_METRIC: result["val_loss"]}
        stopping = stop is not None and not is_last and stop.should_stop(done)
        if not is_last and (stopping or ckpt_metrics is not None or (
                config.save_every and done % config.save_every == 0)):
            if pending is not None:
                report(*pending)  # logged before the checkpoint, so a resume never repeats it
                pending = None
            manager.save(done, state, loader.get_state(), config, metrics=ckpt_metrics)
        if stopping:  # SIGTERM / SIGINT: the checkpoint of this step is being written; stop
            manager.wait()
            log(f"{stop.received}: stopped at step {done}/{total} with a checkpoint in "
                f"{checkpointing.step_dir(config.workdir, done)}; run the same command again "
                "to resume")
            return state, {"interrupted": stop.received, "step": done,
                           "workdir": config.workdir, "train_time_s": train_time}
        step = done

    if pending is not None:
        report(*pending)
    if budget is not None and total < config.iterations:
        stop_reason = "time budget"
    final_step = int(jax.device_get(state.step))
    manager.save(final_step, state, loader.get_state(), config)
    max_batches = None if config.final_full_eval else config.eval_batches
    final_params = eval_params(config, state.opt_state, state.params)  # schedule-free: x, not y
    result = evaluator(final_params, max_batches)
    log(f"final eval @ {final_step}: {format_eval(result)}")
    writer.write(final_step, **{f"final_{k}": v for k, v in result.items()},
                 steps_run=final_step - start, stop_reason=stop_reason)
    result.update(step=final_step, workdir=config.workdir, train_time_s=train_time,
                  steps_run=final_step - start, stop_reason=stop_reason)
    if config.sample_tokens > 0 and jax.process_index() == 0 and jax.process_count() == 1:
        from minillm_jax.sampling import generate

        text = generate(build_model(config), jax.device_get(final_params), config.sample_prompt,
                        max_new_tokens=config.sample_tokens,
                        temperature=config.sample_temperature, top_k=config.sample_top_k,
                        seed=config.seed)
        log(f"sample: {text!r}")
        result["sample"] = text
    return state, result
