"""Swin Transformer (V1) of mmdet, mmseg and mmpretrain: one spec, their blocks are alike.

Block forward (all three): ``x = x + attn(norm1(x), hw_shape)`` then
``x = ffn(norm2(x), identity=x)``; ``attn`` ends with drop path, ``ffn`` applies drop path to
``gamma2(layers(.))`` before its residual add.
"""
from collections import OrderedDict
from typing import Dict, Tuple

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..spec import AdapterPoint, BackboneSpec, register_spec


def _resize_tables(sd: Dict[str, Tensor], backbone: nn.Module) -> None:
    """Bicubic-resize relative position tables to this window size, as mmdet's and mmseg's
    Swin ``init_weights`` do (mmpretrain's Swin resizes in its own load hook); the resized
    tables' index buffers are dropped (the model keeps its own)."""
    own = backbone.state_dict()
    for k, table in list(sd.items()):
        if 'relative_position_bias_table' not in k or k not in own:
            continue
        L1, nH1 = table.shape
        L2, nH2 = own[k].shape
        if nH1 != nH2 or L1 == L2:
            continue
        S1, S2 = int(L1**0.5), int(L2**0.5)
        resized = F.interpolate(table.permute(1, 0).reshape(1, nH1, S1, S1).float(),
                                size=(S2, S2), mode='bicubic')
        sd[k] = resized.view(nH2, L2).permute(1, 0).contiguous().to(table.dtype)
        sd.pop(k.replace('bias_table', 'index'), None)


def _resize_abs_pos_embed(sd: Dict[str, Tensor], backbone: nn.Module) -> None:
    """Resize a square absolute position embedding (1, L, C) to this model's with
    mmpretrain's ``resize_pos_embed`` (mmdet's and mmseg's Swin have no resize)."""
    from mmpretrain.models.utils import resize_pos_embed
    key = 'absolute_pos_embed'
    own = getattr(backbone, key, None)
    if key not in sd or own is None or sd[key].shape == own.shape:
        return
    src = sd[key]
    side, dst = int(round(src.shape[1]**0.5)), int(round(own.shape[1]**0.5))
    if src.dim() != 3 or own.dim() != 3 or side * side != src.shape[1] or \
            dst * dst != own.shape[1]:
        raise ValueError(f'absolute_pos_embed: cannot resize {tuple(src.shape)} to '
                         f'{tuple(own.shape)}')
    sd[key] = resize_pos_embed(src, (side, side), (dst, dst), 'bicubic', 0)


def _upstream_resize(sd: Dict[str, Tensor], backbone: nn.Module) -> None:
    """mmpretrain's Swin resizes tables and the absolute embedding in its own load hooks:
    run those same hooks here, so the checkpoint is in shape before it is checked."""
    own = backbone.state_dict()
    for k in [k for k in sd if k.endswith('relative_position_bias_table') and k in own]:
        index = k.replace('bias_table', 'index')
        if sd[k].shape != own[k].shape and index not in sd and index in own:
            sd[index] = own[index]  # the hook deletes the index of a resized table
    backbone._prepare_relative_position_bias_table(sd, '')
    if hasattr(backbone, '_prepare_abs_pos_embed') and 'absolute_pos_embed' in sd:
        backbone._prepare_abs_pos_embed(sd, '')


def convert_swin(sd: Dict[str, Tensor], backbone: nn.Module) -> Tuple[Dict[str, Tensor], str]:
    """Bring a Swin state dict into the layout of ``backbone`` (mmdet/mmseg/mmpretrain Swin).

    Handles Microsoft's release (``layers.*``, converted with mmdet's ``swin_converter``;
    its final ``norm`` becomes the last stage's out norm if that stage is an output), the
    mmpretrain v1 name ``norm.*`` for the same, ``attn_mask`` buffers (recomputed on the
    fly), classifier heads, another window size (tables resized: mmdet's/mmseg's bicubic way,
    see :func:`_resize_tables`, or mmpretrain's own hook) and another absolute position grid.

    Args:
        sd: Backbone keys of the checkpoint.
        backbone: The model it goes into.
    """
    layout = 'this layout'
    last = len(backbone.stages) - 1
    v2 = [k for k in sd if k.endswith(('.logit_scale', '.cpb_mlp.0.weight'))]
    if v2:
        raise ValueError(f'a Swin V2 checkpoint (e.g. {v2[0]}) cannot load into this Swin V1; '
                         'Swin V2 blocks (post-norm) have no adapter spec yet')
    if any(k.startswith('layers.') and '.blocks.' in k for k in sd):
        from mmdet.models.backbones.swin import swin_converter
        sd = OrderedDict((k[len('backbone.'):], v) for k, v in swin_converter(sd).items())
        layout = "Microsoft's Swin layout"
    out = OrderedDict()
    for k, v in sd.items():
        if k.endswith('attn_mask') or k.startswith('head.'):
            continue
        if k.startswith('norm.') and last in backbone.out_indices:
            k = f'norm{last}.' + k[len('norm.'):]
        out[k] = v
    if hasattr(backbone, '_prepare_relative_position_bias_table'):
        _upstream_resize(out, backbone)
    else:
        _resize_tables(out, backbone)
        _resize_abs_pos_embed(out, backbone)
    return out, layout


SWIN = register_spec(
    BackboneSpec(
        name='Swin',
        blocks=(r'stages\.\d+\.blocks\.\d+', ),
        points=dict(
            attn_out=AdapterPoint('output', 'attn'),
            post_attn=AdapterPoint('residual', 'norm2', consumer='ffn'),
            mlp_parallel=AdapterPoint('parallel', 'ffn'),
            mlp_out=AdapterPoint('output', 'ffn.gamma2'),
            post_mlp=AdapterPoint('output', ''),
        ),
        width='norm1',
        layout='tokens',
        grid='block_arg',
        qkv='attn.w_msa.qkv',
        recompute=dict(attn='attn', ffn='ffn'),
        convert=convert_swin,
        extra_tokens='none (tokens are the window grid)',
    ),
    'mmdet.models.backbones.swin.SwinTransformer',
    'mmseg.models.backbones.swin.SwinTransformer',
    'mmpretrain.models.backbones.swin_transformer.SwinTransformer',
)
