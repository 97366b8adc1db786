"""``mona_mm.PEFTVisionTransformer``: the ViT of the codebase a config is written for
(mmpretrain's or mmseg's), with PEFT adapters (Mona by default)."""
from typing import Optional

import torch.nn as nn

from mona_mm.registry import MODELS
from .codebase import import_class, resolve_codebase
from .injection import peft_backbone_class

VIT_CLASSES = {
    'mmpretrain': 'mmpretrain.models.backbones.vision_transformer.VisionTransformer',
    'mmseg': 'mmseg.models.backbones.vit.VisionTransformer',
}


def PEFTVisionTransformer(*args, codebase: Optional[str] = None, **kwargs) -> nn.Module:
    """The upstream Vision Transformer of ``codebase`` with PEFT adapters.

    mmseg's ViT in the ``mmseg`` scope, mmpretrain's everywhere else (its archs cover ViT,
    DeiT, DINOv2, CLIP and EVA; mmdet has no ViT backbone of its own). Two Monas per block,
    after each residual; the patch tokens go through Mona's depthwise convs on their grid and
    every extra token (cls, register) alone, as a 1x1 map.

    Args:
        *args: Positional arguments of the upstream ViT.
        codebase: ``'mmpretrain'`` or ``'mmseg'``; None: from the scope.
        **kwargs: The upstream ViT's arguments, plus ``peft`` and ``recompute``.
    """
    codebase = resolve_codebase(codebase, VIT_CLASSES, default='mmpretrain')
    cls = peft_backbone_class(import_class(VIT_CLASSES[codebase]))
    return cls(*args, **kwargs)


MODELS.register_module(name='PEFTVisionTransformer', module=PEFTVisionTransformer)
