"""Multi-GPU / multi-node training on torch.distributed: process groups, launch, global BN.

env.py     DistEnv and init_from_env: ranks from torchrun or SLURM, NCCL on GPUs, gloo on CPU
launch.py  `fastclr train --gpus N`: starts the workers through torch.distributed.run
batchnorm.py  global BN across ranks: SyncBatchNorm on CUDA, GlobalBatchNorm on CPU/gloo

The loss with global negatives is a loss concern: fastclr/ops/global_negatives.py
(nt_xent(..., gather_distributed=True)).
"""

from fastclr.distributed.env import DistEnv, init_from_env, launch_info, shutdown

__all__ = ["DistEnv", "init_from_env", "launch_info", "shutdown"]
