"""Measuring, sweeping and planning on top of training: benchmark, gpu_check, sweeps, ablations, plots."""
