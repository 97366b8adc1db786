"""Vision Transformers: mmpretrain's ``VisionTransformer`` (ViT, DeiT, DINOv2, CLIP, EVA
archs), its distilled DeiT, and mmseg's ``VisionTransformer``.

Block forward: mmpretrain ``x = x + attn(ln1(x))``, ``x = ffn(ln2(x), identity=x)``; mmseg
``x = attn(norm1(x), identity=x)``, ``x = ffn(norm2(x), identity=x)``, whose attention is
torch's ``nn.MultiheadAttention`` inside mmcv's (fused ``in_proj_weight``). Tokens are the
extra tokens (cls / distillation / register; as many as there are beyond the grid), then the
patch grid that ``patch_embed`` reports.
"""
import dataclasses
import math
import re
from collections import OrderedDict
from typing import Dict, Tuple

import torch.nn as nn
from torch import Tensor

from ..spec import AdapterPoint, BackboneSpec, register_spec

_COMMON_POINTS = dict(
    mlp_parallel=AdapterPoint('parallel', 'ffn'),
    mlp_out=AdapterPoint('output', 'ffn.gamma2'),
    post_mlp=AdapterPoint('output', ''),
)

#: mmpretrain's attention keys -> mmseg's (torch's nn.MultiheadAttention inside mmcv's)
_TO_MMSEG = ((r'\.attn\.qkv\.weight$', '.attn.attn.in_proj_weight'),
             (r'\.attn\.qkv\.bias$', '.attn.attn.in_proj_bias'),
             (r'\.attn\.proj\.', '.attn.attn.out_proj.'))
_TO_MMPRETRAIN = ((r'\.attn\.attn\.in_proj_weight$', '.attn.qkv.weight'),
                  (r'\.attn\.attn\.in_proj_bias$', '.attn.qkv.bias'),
                  (r'\.attn\.attn\.out_proj\.', '.attn.proj.'))


def _rename(sd: Dict[str, Tensor], rules) -> Tuple[Dict[str, Tensor], bool]:
    out, changed = OrderedDict(), False
    for k, v in sd.items():
        new = k
        for pattern, repl in rules:
            new = re.sub(pattern, repl, new)
        changed |= new != k
        out[new] = v
    return out, changed


def convert_vit(sd: Dict[str, Tensor], backbone: nn.Module) -> Tuple[Dict[str, Tensor], str]:
    """Bring a ViT state dict into ``backbone``'s layout: mmpretrain's and mmseg's attention
    key names in either direction, classifier heads dropped, and a position embedding of
    another grid resized: mmseg's ViT as its ``init_weights`` does, mmpretrain's with its own
    load hook.

    Args:
        sd: Backbone keys of the checkpoint.
        backbone: The model it goes into.
    """
    # mmseg's blocks hold torch's attention inside mmcv's
    is_mmseg = isinstance(getattr(backbone.layers[0].attn, 'attn', None),
                          nn.MultiheadAttention)
    sd = OrderedDict((k, v) for k, v in sd.items() if not k.startswith('head.'))
    sd, changed = _rename(sd, _TO_MMSEG if is_mmseg else _TO_MMPRETRAIN)
    layout = ("mmpretrain's ViT layout" if is_mmseg else "mmseg's ViT layout") \
        if changed else 'this layout'
    pos = sd.get('pos_embed')
    if pos is not None and not is_mmseg and pos.shape != backbone.pos_embed.shape:
        backbone._prepare_pos_embed(sd, '')  # mmpretrain's own load hook, run before the check
    if is_mmseg and pos is not None and pos.shape != backbone.pos_embed.shape:
        h, w = backbone.img_size
        patch = backbone.patch_size
        side = int(math.sqrt(pos.shape[1] - 1))
        sd['pos_embed'] = backbone.resize_pos_embed(pos, (h // patch, w // patch),
                                                    (side, side), backbone.interpolate_mode)
    return sd, layout


MMPRETRAIN_VIT = register_spec(
    BackboneSpec(
        name='ViT',
        blocks=(r'layers\.\d+', ),
        points=dict(attn_out=AdapterPoint('output', 'attn'),
                    post_attn=AdapterPoint('residual', 'ln2', consumer='ffn'),
                    **_COMMON_POINTS),
        width='ln1',
        layout='tokens',
        grid='patch_embed',
        qkv='attn.qkv',
        recompute=dict(attn='attn', ffn='ffn'),
        convert=convert_vit,
        extra_tokens='cls / distillation / register tokens before the patch grid',
    ),
    'mmpretrain.models.backbones.vision_transformer.VisionTransformer',
    'mmpretrain.models.backbones.deit.DistilledVisionTransformer',
)

MMSEG_VIT = register_spec(
    dataclasses.replace(
        MMPRETRAIN_VIT,
        # the attention branch before drop path: mmcv's attention adds its own residual
        points=dict(attn_out=AdapterPoint('output', 'attn.proj_drop'),
                    post_attn=AdapterPoint('residual', 'norm2', consumer='ffn'),
                    **_COMMON_POINTS),
        width='norm1',
        qkv='attn.attn',
        extra_tokens='the cls token (with_cls_token=True) before the patch grid',
    ),
    'mmseg.models.backbones.vit.VisionTransformer',
)
