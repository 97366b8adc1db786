"""SegFormer's Mix Transformer (mmseg ``MixVisionTransformer``).

Block forward (``layers.<i>.1.<j>``, pre-norm, the residuals inside the modules):
``x = attn(norm1(x), hw_shape, identity=x)`` then ``x = ffn(norm2(x), hw_shape, identity=x)``,
with ``attn`` the efficient (spatial-reduction) attention around torch's
``nn.MultiheadAttention`` (``attn.attn``: keys and values from the reduced map) and ``ffn``
the Mix-FFN (``ffn.layers`` on the NCHW map: 1x1 conv, 3x3 depthwise conv, GELU, 1x1 conv).
The points are Swin V1's: Mona after each residual (``residual`` before ``norm2``, as the
stream the FFN adds back, and after the block), Adapter on the attention output and the
Mix-FFN output (its branch as tokens, entering the residual add), AdaptFormer
beside the Mix-FFN, LoRA on q and v of the fused ``in_proj_weight`` (weight-merged, so the
reduced keys and values get their update too). Checkpoints load in mmseg's layout (the
official SegFormer files after mmseg's ``tools/model_converters/mit2mmseg.py``, as mmseg's
own configs require).
"""
from ..spec import AdapterPoint, BackboneSpec, register_spec

#: The points of the pre-norm spatial-reduction blocks of MiT and PVT (``specs/pvt.py``).
SR_POINTS = dict(
    attn_out=AdapterPoint('output', 'attn.attn', index=0),
    post_attn=AdapterPoint('residual', 'norm2', consumer='ffn'),
    mlp_parallel=AdapterPoint('parallel', 'ffn'),
    # the Mix-FFN's branch as tokens (its ``layers`` work on the NCHW map): what enters the
    # residual add, after the branch's drop path
    mlp_out=AdapterPoint('output', 'ffn.dropout_layer'),
    post_mlp=AdapterPoint('output', ''),
)

MIT = register_spec(
    BackboneSpec(
        name='MiT',
        blocks=(r'layers\.\d+\.1\.\d+', ),
        points=SR_POINTS,
        width='norm1',
        layout='tokens',
        grid='block_arg',
        qkv='attn.attn',
        recompute=dict(attn='attn', ffn='ffn'),
        extra_tokens='none (tokens are the stage grid)',
    ),
    'mmseg.models.backbones.mit.MixVisionTransformer',
)
