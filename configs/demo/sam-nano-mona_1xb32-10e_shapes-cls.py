# ImageClassifier with a Mona SAM image encoder (mmpretrain's ViTSAM; Mona on its (B, H, W, C)
# maps, after each residual) on the shapes classification folders.
_base_ = './swin-nano-mona_1xb32-10e_shapes-cls.py'
# the backbone of sam-nano_1xb32-20e_shapes-cls.py (its work_dir)
pretrained = 'work_dirs/demo/pretrain_sam/epoch_20.pth'
model = dict(
    backbone=dict(
        _delete_=True, type='mona_mm.PEFTBackbone', peft=dict(type='Mona'),
        module=dict(type='mmpretrain.ViTSAM',
                    arch=dict(embed_dims=64, num_layers=4, num_heads=2,
                              feedforward_channels=256, global_attn_indexes=[1, 3]),
                    img_size=112, patch_size=16, window_size=4, out_channels=64,
                    drop_path_rate=0.1,
                    init_cfg=dict(type='Pretrained', checkpoint=pretrained,
                                  prefix='backbone'))),
    head=dict(in_channels=64))
