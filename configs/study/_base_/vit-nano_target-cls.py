# PEFT study, target classification with the ViT-nano (see swin-nano_target-cls.py).
_base_ = ['./swin-nano_target-cls.py']
model = dict(
    backbone=dict(
        _delete_=True, type='mona_mm.PEFTVisionTransformer',
        arch=dict(embed_dims=64, num_layers=4, num_heads=2, feedforward_channels=256),
        img_size=56, patch_size=8, out_type='cls_token', drop_path_rate=0.1,
        peft=dict(type='Mona')),
    neck=None, head=dict(in_channels=64))
