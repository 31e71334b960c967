"""Multi-GPU / multi-node training on torch.distributed: process groups, launch, global BN.

env.py     DistEnv and init_from_env: the process group, NCCL on GPUs, gloo on CPU
launch_env.py  launch_info: ranks from torchrun or SLURM, read from the environment (no torch)
launch.py  `fastclr train --gpus N`: starts the workers through torch.distributed.run
batchnorm.py  global BN across ranks: SyncBatchNorm on CUDA, GlobalBatchNorm on CPU/gloo

The loss with global negatives is a loss concern: fastclr/ops/global_negatives.py
(nt_xent(..., gather_distributed=True)).
"""

from fastclr.distributed.launch_env import launch_info

__all__ = ["DistEnv", "init_from_env", "launch_info", "shutdown"]


def __getattr__(name: str):
    """env's names on first use (PEP 562): importing the package (as `fastclr train` does to parse
    its flags) does not load torch."""
    if name not in ("DistEnv", "init_from_env", "shutdown"):
        raise AttributeError(f"module 'fastclr.distributed' has no attribute {name!r}")
    from fastclr.distributed import env

    return getattr(env, name)
