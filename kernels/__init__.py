"""Triton kernels of fastclr (installed as fastclr.kernels). Only @triton.jit code and tuning configs."""
