"""Re-parameterise a trained PEFT model for inference."""
from typing import Dict

import torch.nn as nn

from .base import iter_adapters
from .lora import LoRAMultiheadAttention, LoRAQKV
from .mona import MonaDeploy, MonaReference

DEPLOY_META_KEY = 'mona_mm_deploy'


def reparameterize(model: nn.Module) -> Dict[str, int]:
    """Fold every adapter that has an inference form, in place.

    Mona: its three depthwise convs, their average and the identity become one depthwise
    conv, the 1x1 conv and its identity one Linear, ``gamma`` goes into the LayerNorm.
    LoRA: merged into qkv (a plain Linear). Adapters MiMi emptied stay as they are (a bias,
    or nothing).

    Args:
        model: A model (or backbone) holding adapters; put it in eval mode for inference.

    Returns:
        How many adapters of each kind were folded.
    """
    inner = getattr(model, 'module', model)
    done = {'mona': 0, 'lora': 0}
    for name, adapter in list(iter_adapters(inner)):
        if isinstance(adapter, MonaReference):
            new, key = MonaDeploy.from_mona(adapter), 'mona'
        elif isinstance(adapter, (LoRAQKV, LoRAMultiheadAttention)):
            new, key = adapter.merged(), 'lora'
        else:
            continue
        inner.set_submodule(name, new)
        done[key] += 1
    return done
