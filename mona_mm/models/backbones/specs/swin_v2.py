"""Swin Transformer V2 (mmpretrain): post-norm blocks.

Block forward: ``x = x + norm1(attn(x, hw_shape))`` then ``x = x + norm2(ffn(x))`` (and
``x = norm3(x)`` every few blocks of the huge and giant archs). The residual adds happen in
the block's own code, so the points after them are ``post_residual`` ones: the norm closing
each branch returns ``adapter(x + out) - x`` and the block's add gives ``adapter(x + out)``,
the stream Mona rewrites in V1 (after each residual). The adapters' other points sit where they
sit in V1: Adapter after the attention and on the MLP output (before the norms), AdaptFormer
beside the MLP (reading the MLP's input, the stream; its output added after ``norm2``).

LoRA is refused: V2's window attention computes ``F.linear(x, qkv.weight, q/v bias)`` on the
layer's tensors without calling the layer, so a wrapper around ``attn.w_msa.qkv`` never runs.
"""
from typing import Dict, Tuple

import torch.nn as nn
from torch import Tensor

from ..spec import AdapterPoint, BackboneSpec, register_spec


def convert_swin_v2(sd: Dict[str, Tensor], backbone: nn.Module) -> Tuple[Dict[str, Tensor], str]:
    """mmpretrain's layout (its converted releases) as it is; an absolute position embedding
    of another grid is resized by upstream's own load hook (``_prepare_abs_pos_embed``), run
    here so the checkpoint is in shape before it is checked. The window buffers
    (``relative_position_index``, ``relative_coords_table``) upstream rebuilds for its window
    size, and drops from any checkpoint in its other load hook.

    Args:
        sd: Backbone keys of the checkpoint.
        backbone: The model it goes into.
    """
    sd = dict(sd)
    if 'absolute_pos_embed' in sd and hasattr(backbone, '_prepare_abs_pos_embed'):
        backbone._prepare_abs_pos_embed(sd, '')
    return sd, 'this layout'

SWIN_V2 = register_spec(
    BackboneSpec(
        name='Swin V2',
        blocks=(r'stages\.\d+\.blocks\.\d+', ),
        points=dict(
            attn_out=AdapterPoint('output', 'attn'),
            post_attn=AdapterPoint('post_residual', 'norm1', source='attn'),
            mlp_parallel=AdapterPoint('parallel', 'norm2', source='ffn'),
            mlp_out=AdapterPoint('output', 'ffn.gamma2'),
            post_mlp=AdapterPoint('post_residual', 'norm2', source='ffn'),
        ),
        width='norm1',
        layout='tokens',
        grid='block_arg',
        no_qkv=("Swin V2's window attention reads attn.w_msa.qkv.weight with its q and v "
                'biases in F.linear, without calling the layer, so a LoRA wrapper never runs'),
        recompute=dict(attn='attn', ffn='ffn'),
        convert=convert_swin_v2,
        extra_tokens='none (tokens are the window grid)',
    ),
    'mmpretrain.models.backbones.swin_transformer_v2.SwinTransformerV2',
)
