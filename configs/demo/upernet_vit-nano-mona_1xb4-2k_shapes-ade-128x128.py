# UperNet with a Mona ViT-nano (mmseg's VisionTransformer, patch 16, cls token) on the shapes
# in ADE20K folder format; the neck turns the four 8x8 token maps into a pyramid.
_base_ = './upernet_swin-nano-mona_1xb4-2k_shapes-ade-128x128.py'
# the backbone of vit-nano_1xb32-20e_shapes-cls.py (mmpretrain's ViT at 112 px: converted and
# its position embedding resized on load)
pretrained = 'work_dirs/demo/pretrain_vit/epoch_20.pth'
model = dict(
    backbone=dict(
        _delete_=True, type='mona_mm.PEFTVisionTransformer', img_size=(128, 128),
        patch_size=16, embed_dims=64, num_layers=4, num_heads=2, mlp_ratio=4,
        out_indices=(0, 1, 2, 3), drop_path_rate=0.1, peft=dict(type='Mona'),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(type='MultiLevelNeck', in_channels=[64, 64, 64, 64], out_channels=64,
              scales=[4, 2, 1, 0.5]),
    decode_head=dict(in_channels=[64, 64, 64, 64], channels=64),
    auxiliary_head=dict(in_channels=64, channels=32))
