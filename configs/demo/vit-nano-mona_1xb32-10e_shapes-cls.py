# ImageClassifier with a Mona ViT-nano (mmpretrain's VisionTransformer, patch 16, cls token)
# on the shapes classification folders.
_base_ = './swin-nano-mona_1xb32-10e_shapes-cls.py'
model = dict(
    backbone=dict(
        _delete_=True, type='mona_mm.PEFTVisionTransformer',
        arch=dict(embed_dims=64, num_layers=4, num_heads=2, feedforward_channels=256),
        img_size=112, patch_size=16, out_type='cls_token', drop_path_rate=0.1,
        peft=dict(type='Mona')),
    neck=None,
    head=dict(in_channels=64))
