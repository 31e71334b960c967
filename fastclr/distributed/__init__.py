"""Multi-GPU / multi-node training on torch.distributed.

env.py     DistEnv and init_from_env: ranks from torchrun or SLURM, NCCL on GPUs, gloo on CPU
launch.py  `fastclr train --gpus N`: starts the workers through torch.distributed.run
loss.py    NT-Xent with global negatives and exact gradients (nt_xent(..., gather_distributed=True))
batchnorm.py  global BN across ranks: SyncBatchNorm on CUDA, GlobalBatchNorm on CPU/gloo
"""

from fastclr.distributed.env import DistEnv, init_from_env, launch_info, shutdown

__all__ = ["DistEnv", "init_from_env", "launch_info", "shutdown"]
