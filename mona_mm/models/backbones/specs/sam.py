"""SAM's image encoder (mmpretrain ``ViTSAM``): a plain ViT on a (B, H, W, C) map, windowed or
global attention with decomposed relative positions per block.

Block forward (``layers.<i>``): ``x = x + attn(windows(ln1(x)))`` (windows undone), then
``x = ffn(ln2(x), identity=x)``. The points are the ViT's: Mona after each residual (the stream
entering ``ln2``, which the FFN adds back as ``identity``; and after the block), on the map
itself (``layout='nhwc'``: Mona's depthwise convs run on the block's H x W grid), Adapter on the
attention output (per window, token-wise) and the FFN output, AdaptFormer beside the FFN, LoRA
on q and v of ``attn.qkv``.
"""
from ..spec import AdapterPoint, BackboneSpec, register_spec

SAM = register_spec(
    BackboneSpec(
        name='SAM ViT',
        blocks=(r'layers\.\d+', ),
        points=dict(
            attn_out=AdapterPoint('output', 'attn'),
            post_attn=AdapterPoint('residual', 'ln2', consumer='ffn'),
            mlp_parallel=AdapterPoint('parallel', 'ffn'),
            mlp_out=AdapterPoint('output', 'ffn.gamma2'),
            post_mlp=AdapterPoint('output', ''),
        ),
        width='ln1',
        layout='nhwc',
        grid='tensor',
        qkv='attn.qkv',
        recompute=dict(attn='attn', ffn='ffn'),
        extra_tokens='none (a (B, H, W, C) map)',
    ),
    'mmpretrain.models.backbones.vit_sam.ViTSAM',
)
