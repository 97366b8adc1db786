"""Distributed launch on machines without a GPU."""
import os
import subprocess

import torch
import torch.distributed as dist
from mmengine.config import Config

# what srun sets for every task, and what mmengine's slurm launcher reads
SLURM_VARS = ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST')


def _slurm_to_torch_env(port=None) -> None:
    """Set what ``env://`` initialisation reads from srun's variables, as mmengine's slurm
    launcher does (RANK, WORLD_SIZE, LOCAL_RANK; MASTER_ADDR: the first node of the job,
    unless set; MASTER_PORT: ``port``, else the environment's, else 29500) but without its
    ``torch.cuda.set_device``."""
    missing = [v for v in SLURM_VARS if v not in os.environ]
    if missing:
        raise RuntimeError(f'--launcher slurm needs the {", ".join(missing)} that srun sets; '
                           'start the job with tools/slurm_train.sh or tools/slurm_test.sh.')
    os.environ['RANK'] = os.environ['SLURM_PROCID']
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
    if port is not None:
        os.environ['MASTER_PORT'] = str(port)
    os.environ.setdefault('MASTER_PORT', '29500')
    if 'MASTER_ADDR' not in os.environ:
        nodes = os.environ['SLURM_NODELIST']
        proc = subprocess.run(['scontrol', 'show', 'hostname', nodes], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, check=False)
        hosts = proc.stdout.split()
        if proc.returncode != 0 or not hosts:
            raise RuntimeError(f'cannot find the first node of {nodes} (scontrol show hostname:'
                               f' {proc.stderr.strip() or "no output"}); set MASTER_ADDR.')
        os.environ['MASTER_ADDR'] = hosts[0]


def prepare_cpu_distributed(cfg: Config) -> bool:
    """Make ``--launcher pytorch`` and ``--launcher slurm`` work without CUDA: gloo, and DDP
    without device ids.

    mmengine 0.10.7 calls ``torch.cuda.set_device`` in its pytorch and slurm launchers and
    gives DDP ``device_ids=[LOCAL_RANK]``; both fail for a CPU model. Here we start the gloo
    process group ourselves (mmengine then skips its own init) and build DDP with
    ``device_ids=None``; under slurm the rank, world size and master address come from srun's
    variables as in mmengine's launcher. Does nothing when CUDA is available (mmengine's own
    launchers run) or the launcher is ``none`` or ``mpi``.

    Args:
        cfg: The run's config (its ``launcher`` already set); modified in place.

    Returns:
        Whether the CPU path was taken.
    """
    launcher = cfg.get('launcher', 'none')
    if launcher not in ('pytorch', 'slurm') or torch.cuda.is_available():
        return False
    if not dist.is_initialized():
        if launcher == 'slurm':
            dist_cfg = (cfg.get('env_cfg') or {}).get('dist_cfg') or {}
            _slurm_to_torch_env(dist_cfg.get('port'))
        dist.init_process_group(backend='gloo', rank=int(os.environ['RANK']),
                                world_size=int(os.environ['WORLD_SIZE']))
    wrapper = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel')
    wrapper['device_ids'] = None
    wrapper.setdefault('broadcast_buffers', False)
    wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
    cfg.model_wrapper_cfg = wrapper
    return True
