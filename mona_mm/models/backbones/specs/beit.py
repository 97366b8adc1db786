"""BEiT (mmpretrain ``BEiTViT``; mmseg ``BEiT`` and ``MAE``): ViTs with layer scale and
relative position bias.

Block forward (``layers.<i>``): ``x = x + drop_path(gamma_1 * attn(norm(x)))`` then
``x = x + drop_path(gamma_2 * ffn(norm(x)))`` (mmpretrain names the norms ``ln1``/``ln2``,
mmseg ``norm1``/``norm2``; without layer scale mmpretrain leaves the gammas out), the adds in
the block's code and one drop-path module for both branches: Mona after the attention
residual is a ``stream`` point, as on EVA-02 (``specs/eva02.py``); after the MLP residual, the
block's output. The grid comes from the patch embedding (the blocks get none); the cls token
goes through Mona alone.

LoRA is refused: with q/v biases (BEiT's default) the attention computes
``F.linear(x, qkv.weight, q/v bias)`` without calling its ``qkv`` layer, so a wrapper would
never run (refused for the whole family, MAE's bias-free default included).
"""
from typing import Dict, Tuple

import torch.nn as nn
from torch import Tensor

from ..spec import AdapterPoint, BackboneSpec, register_spec


def convert_beit(sd: Dict[str, Tensor], backbone: nn.Module) -> Tuple[Dict[str, Tensor], str]:
    """The codebase's layout, with what upstream adapts on loading done before the check:
    mmpretrain's load hooks (position embedding of another grid; a shared relative position
    table expanded to every block) and mmseg's ``resize_rel_pos_embed`` (its
    ``init_weights``: relative position tables of another window, their indices rebuilt).

    Args:
        sd: Backbone keys of the checkpoint.
        backbone: The model it goes into.
    """
    sd = dict(sd)
    if hasattr(backbone, 'resize_rel_pos_embed'):  # mmseg (only where a table differs)
        own = backbone.state_dict()
        if any(k.endswith('relative_position_bias_table') and k in own and
               v.shape != own[k].shape for k, v in sd.items()):
            sd = dict(backbone.resize_rel_pos_embed(sd))
    else:
        for hook in ('_prepare_pos_embed', '_prepare_relative_position_bias_table'):
            if hasattr(backbone, hook):
                getattr(backbone, hook)(sd, '')
    return sd, 'this layout'

_NO_QKV = ("with q and v biases (BEiT's default) BEiT's attention reads attn.qkv.weight in "
           'F.linear without calling the layer, so a LoRA wrapper would never run; refused for '
           "the whole family, MAE's bias-free default included")


def _beit(norm1: str, norm2: str) -> BackboneSpec:
    return BackboneSpec(
        name='BEiT',
        blocks=(r'layers\.\d+', ),
        points=dict(
            attn_out=AdapterPoint('output', 'attn'),
            post_attn=AdapterPoint('stream', norm2, consumer='drop_path'),
            mlp_parallel=AdapterPoint('parallel', 'ffn'),
            mlp_out=AdapterPoint('output', 'ffn.gamma2'),
            post_mlp=AdapterPoint('output', ''),
        ),
        width=norm1,
        layout='tokens',
        grid='patch_embed',
        no_qkv=_NO_QKV,
        recompute=dict(attn='attn', ffn='ffn'),
        convert=convert_beit,
        extra_tokens='cls token: alone through Mona, as a 1x1 map',
    )


BEIT_MMPRETRAIN = register_spec(_beit('ln1', 'ln2'),
                                'mmpretrain.models.backbones.beit.BEiTViT')
BEIT_MMSEG = register_spec(_beit('norm1', 'norm2'), 'mmseg.models.backbones.beit.BEiT',
                           'mmseg.models.backbones.mae.MAE')
