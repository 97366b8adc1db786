# Full training of a small MiT (mmseg's MixVisionTransformer, in an mmpretrain classifier) on
# the shapes classification set (MiT-b0 at half width): the pretrained backbone of the
# SegFormer Mona config. Writes work_dirs/demo/pretrain_mit/epoch_20.pth, where it reads it.
_base_ = './swin-nano_1xb32-20e_shapes-cls.py'
model = dict(
    backbone=dict(
        _delete_=True, type='mona_mm.PEFTBackbone', peft=dict(type='Full'),
        module=dict(type='mmseg.MixVisionTransformer', embed_dims=16,
                    num_layers=[2, 2, 2, 2], num_heads=[1, 2, 5, 8],
                    out_indices=(3, ), drop_path_rate=0.1)),
    head=dict(in_channels=128))
work_dir = 'work_dirs/demo/pretrain_mit'
