"""ResNet family (ResNet, ResNetV1c/V1d, ResNeXt) of mmdet, mmseg and mmpretrain: Mona on a CNN.

Their blocks (``layer<i>.<j>``: ``BasicBlock`` or ``Bottleneck``) end with
``relu(branch(x) + identity)``: one residual, so one adapter point, after the block, on the
NCHW map read as H x W tokens (``layout='nchw'``), as for ConvNeXt. Mona there is one Mona per
block (the Mona authors placed it only in Transformers): its scaled LayerNorm, projections and
3/5/7 depthwise convs see the block's output channels at every position, and its output (the
input plus the adapted path) is what the next block and the stage output receive.

What applies: Mona, BitFit (the BatchNorm biases: the convs have none), NormTuning (the
BatchNorm/GroupNorm affine parameters), Partial, Fixed and Full. Adapter, LoRand and
AdaptFormer ask for points inside a Transformer block (after the attention, on and beside the
MLP) and LoRA for a qkv projection: each is refused naming what the family offers. A frozen
BatchNorm keeps its running statistics (see ``PEFTBackboneMixin.train``).
"""
from ..spec import AdapterPoint, BackboneSpec, register_spec

RESNET = register_spec(
    BackboneSpec(
        name='ResNet',
        blocks=(r'layer\d+\.\d+', ),
        points=dict(post_mlp=AdapterPoint('output', '')),
        # Bottleneck: conv3, BasicBlock: conv2 give the block's output channels
        width=('conv3', 'conv2'),
        layout='nchw',
        grid='tensor',
        no_qkv='a residual CNN block has no attention',
        extra_tokens='none (NCHW maps)',
    ),
    *[f'{pkg}.models.backbones.{mod}.{cls}'
      for pkg, classes in (('mmdet', ('resnet.ResNet', 'resnet.ResNetV1d', 'resnext.ResNeXt')),
                           ('mmseg', ('resnet.ResNet', 'resnet.ResNetV1c', 'resnet.ResNetV1d',
                                      'resnext.ResNeXt')),
                           ('mmpretrain', ('resnet.ResNet', 'resnet.ResNetV1c',
                                           'resnet.ResNetV1d', 'resnext.ResNeXt')))
      for mod, cls in (c.split('.') for c in classes)],
)
