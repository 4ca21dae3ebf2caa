"""The network: Transformer blocks, attention kernels, MoE, losses, generation, parameter and FLOP counts."""
