# PEFT study, target semantic segmentation with the ViT-nano (mmpretrain's, as pretrained;
# patch 8: 12x12 tokens at 96 px): the linear decoder over its four token maps (see
# fcn-linear_swin-nano_target-seg.py).
_base_ = './fcn-linear_swin-nano_target-seg.py'
model = dict(
    backbone=dict(
        _delete_=True, type='mona_mm.PEFTVisionTransformer', codebase='mmpretrain',
        arch=dict(embed_dims=64, num_layers=4, num_heads=2, feedforward_channels=256),
        img_size=96, patch_size=8, out_type='featmap', out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1, peft=dict(type='Mona')),
    decode_head=dict(in_channels=[64, 64, 64, 64], channels=256))
