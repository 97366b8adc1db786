"""Distributed launch on machines without a GPU."""
import os

import torch
import torch.distributed as dist
from mmengine.config import Config


def prepare_cpu_distributed(cfg: Config) -> bool:
    """Make ``--launcher pytorch`` work without CUDA: gloo, and DDP without device ids.

    mmengine 0.10.7 calls ``torch.cuda.set_device`` in its pytorch launcher and gives DDP
    ``device_ids=[LOCAL_RANK]``; both fail for a CPU model. Here we start the gloo process
    group ourselves (mmengine then skips its own init) and build DDP with ``device_ids=None``.
    Does nothing when CUDA is available or the launcher is ``none``.

    Args:
        cfg: The run's config (its ``launcher`` already set); modified in place.

    Returns:
        Whether the CPU path was taken.
    """
    if cfg.get('launcher', 'none') != 'pytorch' or torch.cuda.is_available():
        return False
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo', rank=int(os.environ['RANK']),
                                world_size=int(os.environ['WORLD_SIZE']))
    wrapper = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel')
    wrapper['device_ids'] = None
    wrapper.setdefault('broadcast_buffers', False)
    wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
    cfg.model_wrapper_cfg = wrapper
    return True
