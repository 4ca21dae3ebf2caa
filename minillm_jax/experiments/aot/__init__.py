"""Reading a step compiled ahead of time for a GPU: the kernels it launches and their cost.

A deviceless compile (`jax.experimental.topologies` + `lower(...).compile()`) runs the real XLA GPU
pipeline but gives no cost analysis, so the optimized HLO text is read here: `hlo` lists the kernels
one step launches with FLOPs and HBM bytes, `stash` lists the activations the forward layer loop
saves for the backward pass, and `roofline` turns the kernels into a predicted step time.
"""
