"""Pyramid Vision Transformer v1 and v2 (mmdet ``PyramidVisionTransformer``,
``PyramidVisionTransformerV2``): the blocks (``layers.<i>.1.<j>``, ``PVTEncoderLayer``) are
MiT's (``specs/mit.py``): ``x = attn(norm1(x), hw_shape, identity=x)``, ``x = ffn(norm2(x),
hw_shape, identity=x)``, a spatial-reduction attention around ``nn.MultiheadAttention`` and an
FFN (``ffn.layers``; v2's with a depthwise conv), so they offer the same points. Checkpoints
load in mmdet's layout or the official PVT release's (converted with mmdet's own
``pvt_convert`` when the backbone's ``convert_weights`` is on, as mmdet's ``init_weights``
does).
"""
import re
from typing import Dict, Tuple

import torch.nn as nn
from torch import Tensor

from ..spec import BackboneSpec, register_spec
from .mit import SR_POINTS

_OFFICIAL = re.compile(r'^(patch_embed|block|norm)\d+\.')


def convert_pvt(sd: Dict[str, Tensor], backbone: nn.Module) -> Tuple[Dict[str, Tensor], str]:
    """mmdet's layout as it is; the official release (``patch_embed1.*``, ``block1.*``...)
    through mmdet's ``pvt_convert`` if the backbone converts weights (``convert_weights``).

    Args:
        sd: Backbone keys of the checkpoint.
        backbone: The model it goes into.
    """
    if getattr(backbone, 'convert_weights', False) and any(_OFFICIAL.match(k) for k in sd):
        from mmdet.models.backbones.pvt import pvt_convert
        return dict(pvt_convert(sd)), "the official PVT layout (mmdet's pvt_convert)"
    return sd, 'this layout'


PVT = register_spec(
    BackboneSpec(
        name='PVT',
        blocks=(r'layers\.\d+\.1\.\d+', ),
        points=SR_POINTS,
        width='norm1',
        layout='tokens',
        grid='block_arg',
        qkv='attn.attn',
        recompute=dict(attn='attn', ffn='ffn'),
        convert=convert_pvt,
        extra_tokens='none (tokens are the stage grid)',
        # v1 keeps its absolute position embedding first among the blocks of a stage
        block_classes=('PVTEncoderLayer', ),
    ),
    'mmdet.models.backbones.pvt.PyramidVisionTransformer',
    'mmdet.models.backbones.pvt.PyramidVisionTransformerV2',
)
