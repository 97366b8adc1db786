"""ConvNeXt (mmpretrain): the worked example of a backbone family that is not a
Transformer.

Its blocks (``stages.<i>.<j>``, ``ConvNeXtBlock``) map NCHW to NCHW with one residual, so
they offer one adapter point, after the block; an adapter there sees the map as H x W tokens
(``layout='nchw'``: flattened to (B, H*W, C) and back).
"""
from ..spec import AdapterPoint, BackboneSpec, register_spec

register_spec(
    BackboneSpec(
        name='ConvNeXt',
        blocks=(r'stages\.\d+\.\d+', ),
        points=dict(post_mlp=AdapterPoint('output', '')),
        width='norm',
        layout='nchw',
        grid='tensor',
        extra_tokens='none (NCHW maps)',
    ),
    'mmpretrain.models.backbones.convnext.ConvNeXt',
)
