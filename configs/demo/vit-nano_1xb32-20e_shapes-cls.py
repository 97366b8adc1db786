# Full training of a small ViT on the shapes classification set (mmpretrain): the pretrained
# backbone of the vit-nano Mona configs, as swin-nano_1xb32-20e_shapes-cls.py is for the
# Swin-nano ones. Writes work_dirs/demo/pretrain_vit/epoch_20.pth, where they read it.
_base_ = ['./swin-nano_1xb32-20e_shapes-cls.py', '../_base_/models/vit-nano.py']
model = dict(
    backbone=dict(
        _delete_=True, type='mona_mm.PEFTVisionTransformer', arch={{_base_.vit_nano_arch}},
        img_size=112, patch_size=16, out_type='cls_token', drop_path_rate=0.1,
        peft=dict(type='Full')),
    neck=None, head=dict(in_channels=64))
work_dir = 'work_dirs/demo/pretrain_vit'
