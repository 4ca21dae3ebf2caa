"""Train-step throughput: parameters, FLOPs/token, step time, tokens/s and MFU.

    python tools/bench.py --config configs/demo.py [--config.n_layer=4 ...] [--steps 5]
"""

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps (median reported).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")


def main(argv):
    del argv
    from minillm_jax.benchmark import benchmark

    c = _CONFIG.value
    r = benchmark(c, steps=_STEPS.value, warmup=_WARMUP.value)
    print(f"model {c.model} L{c.n_layer} C{c.n_embd} H{c.n_head} T{c.sequence_length} "
          f"batch {c.batch_size}x{c.acc_steps} {c.compute_dtype} on {r['devices']} device(s)")
    print(f"parameters        {r['params']:,}")
    print(f"FLOPs per token   {r['flops_per_token']:.4g}")
    print(f"compile time      {r['compile_s']:.1f} s")
    print(f"step time         {1000 * r['step_time_s']:.1f} ms (median of {_STEPS.value})")
    print(f"tokens/s          {r['tokens_per_s']:,.0f}")
    print(f"peak              {r['peak_flops_per_device'] / 1e12:.3f} TFLOP/s per device "
          f"({r['peak_source']})")
    print(f"MFU               {100 * r['mfu']:.1f}%")


if __name__ == "__main__":
    flags.mark_flag_as_required("config")
    app.run(main)
