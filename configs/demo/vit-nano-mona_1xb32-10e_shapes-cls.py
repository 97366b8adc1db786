# ImageClassifier with a Mona ViT-nano (mmpretrain's VisionTransformer) on the shapes
# classification folders.
_base_ = ['./swin-nano-mona_1xb32-10e_shapes-cls.py', '../_base_/models/vit-nano.py']
model = dict(backbone={{_base_.vit_nano_cls_backbone}}, neck=None, head=dict(in_channels=64))
