# ImageClassifier with a Mona ViT-nano (mmpretrain's VisionTransformer) on the shapes
# classification folders.
_base_ = ['./swin-nano-mona_1xb32-10e_shapes-cls.py', '../_base_/models/vit-nano.py']
# the backbone of vit-nano_1xb32-20e_shapes-cls.py (its work_dir)
pretrained = 'work_dirs/demo/pretrain_vit/epoch_20.pth'
model = dict(
    backbone=dict(
        _delete_=True, type='mona_mm.PEFTVisionTransformer', arch={{_base_.vit_nano_arch}},
        img_size=112, patch_size=16, out_type='cls_token', drop_path_rate=0.1,
        peft=dict(type='Mona'), init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=None, head=dict(in_channels=64))
