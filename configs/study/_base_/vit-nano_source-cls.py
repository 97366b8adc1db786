# PEFT study, pretraining: the demo's ViT-nano (mmpretrain's VisionTransformer, 4 layers of
# 64 dims) on the 56 source classes; patch 8 at 56 px gives it 7x7 tokens, as patch 16 at the
# demo's 112 px does.
_base_ = './swin-nano_source-cls.py'
model = dict(
    backbone=dict(
        _delete_=True, type='mona_mm.PEFTVisionTransformer',
        arch=dict(embed_dims=64, num_layers=4, num_heads=2, feedforward_channels=256),
        img_size=56, patch_size=8, out_type='cls_token', drop_path_rate=0.0,
        peft=dict(type='Full')),
    neck=None, head=dict(in_channels=64))
# a ViT from scratch starts slower than the Swin: a higher lr, and more iterations (the study)
optim_wrapper = dict(optimizer=dict(lr=1e-3))
