"""The distributed environment of a job: which rank am I, and the ``env://`` variables that
torch.distributed (and Lightning Fabric) read.

Locally, :mod:`engine.launch.worker` starts the ranks and sets ``MASTER_ADDR``, ``MASTER_PORT``,
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` itself (as torchrun would). In a SLURM job every task
is started by ``srun``; :func:`export_slurm_environment` turns SLURM's variables into the same
set through :class:`submitit.helpers.TorchDistributedEnvironment`. The trainer then builds a DDP
Fabric from ``WORLD_SIZE`` (gloo on CPU, NCCL on GPU), and Fabric shards the data per rank and
reduces metrics across ranks.
"""

from __future__ import annotations

import os


def global_rank() -> int:
    """This process's rank among all tasks of the job (0 outside a distributed job)."""
    for name in ("RANK", "SLURM_PROCID"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def world_size() -> int:
    for name in ("WORLD_SIZE", "SLURM_NTASKS"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 1


def export_slurm_environment() -> dict[str, str]:
    """In a submitit SLURM job with more than one task, export the torch.distributed variables
    and return them; elsewhere do nothing and return ``{}``.

    ``CUDA_VISIBLE_DEVICES`` is left alone: Fabric gives each task ``cuda:LOCAL_RANK`` of the
    node's GPUs, which would not exist if every task saw a single device.
    """
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm" or int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return {}
    from submitit.helpers import TorchDistributedEnvironment

    env = TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    names = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
    del env
    return {name: os.environ[name] for name in names if name in os.environ}
