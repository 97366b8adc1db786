# Mona on ViT-B/16 (ImageNet-21k), the Swin-L classification recipe otherwise.
_base_ = ['../_base_/swin-l-p4-w7_1xb16-100e_oxford-pets-224.py', '../../_base_/models/vit-b-p16.py']
model = dict(backbone={{_base_.vit_b16_cls_backbone}}, neck=None, head=dict(in_channels=768))
