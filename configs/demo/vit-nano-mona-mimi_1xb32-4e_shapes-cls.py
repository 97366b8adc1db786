# MiMi on the small ViT classifier (used by the tests): the Swin MiMi schedule, a ViT backbone.
_base_ = ['./swin-nano-mona-mimi_1xb32-4e_shapes-cls.py', '../_base_/models/vit-nano.py']
model = dict(backbone={{_base_.vit_nano_cls_backbone}}, neck=None, head=dict(in_channels=64))
