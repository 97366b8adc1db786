# PEFT study, target detection and instance segmentation with the ViT-nano (mmpretrain's, as
# pretrained; patch 8: 12x12 tokens at 96 px): mmseg's MultiLevelNeck turns the four token maps
# into a pyramid at strides 4..32 (see mask-rcnn_swin-nano_fpn_target-det.py).
_base_ = './mask-rcnn_swin-nano_fpn_target-det.py'
model = dict(
    backbone=dict(
        _delete_=True, type='mona_mm.PEFTVisionTransformer', codebase='mmpretrain',
        arch=dict(embed_dims=64, num_layers=4, num_heads=2, feedforward_channels=256),
        img_size=96, patch_size=8, out_type='featmap', out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1, peft=dict(type='Mona')),
    neck=dict(_delete_=True, type='mmseg.MultiLevelNeck', in_channels=[64, 64, 64, 64],
              out_channels=64, scales=[2, 1, 0.5, 0.25]))
