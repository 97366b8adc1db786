# A small ViT for CPU demos and tests (mmpretrain's VisionTransformer, patch 16, cls token) on
# the 112-px shapes classification images. Only a variable, so configs can add this base.
vit_nano_cls_backbone = dict(
    _delete_=True, type='mona_mm.PEFTVisionTransformer',
    arch=dict(embed_dims=64, num_layers=4, num_heads=2, feedforward_channels=256),
    img_size=112, patch_size=16, out_type='cls_token', drop_path_rate=0.1,
    peft=dict(type='Mona'))
