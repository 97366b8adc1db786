# Full training of a small SAM image encoder (mmpretrain's ViTSAM: windowed and global
# attention, relative positions, the channel-reduction neck) on the shapes classification set:
# the pretrained backbone of the SAM Mona config. Writes work_dirs/demo/pretrain_sam/epoch_20.pth.
_base_ = './swin-nano_1xb32-20e_shapes-cls.py'
model = dict(
    backbone=dict(
        _delete_=True, type='mona_mm.PEFTBackbone', peft=dict(type='Full'),
        module=dict(type='mmpretrain.ViTSAM',
                    arch=dict(embed_dims=64, num_layers=4, num_heads=2,
                              feedforward_channels=256, global_attn_indexes=[1, 3]),
                    img_size=112, patch_size=16, window_size=4, out_channels=64,
                    drop_path_rate=0.1)),
    head=dict(in_channels=64))
work_dir = 'work_dirs/demo/pretrain_sam'
