# Mona on DINOv2 ViT-B/14 (cls and patch tokens), the Swin-L classification recipe otherwise.
_base_ = ['../_base_/swin-l-p4-w7_1xb16-100e_flowers102-224.py',
          '../../_base_/models/vit-b-p16.py']
model = dict(backbone={{_base_.dinov2_b14_cls_backbone}}, neck=None,
             head=dict(in_channels=768))
