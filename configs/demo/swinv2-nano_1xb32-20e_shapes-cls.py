# Full training of a small Swin V2 on the shapes classification set (mmpretrain): the
# pretrained backbone of the swinv2-nano Mona config, as swin-nano_1xb32-20e_shapes-cls.py is
# for the Swin-nano ones. Writes work_dirs/demo/pretrain_swinv2/epoch_20.pth, where it reads it.
_base_ = ['./swin-nano_1xb32-20e_shapes-cls.py', '../_base_/models/swinv2-nano.py']
model = dict(
    backbone=dict(
        _delete_=True, type='mona_mm.PEFTSwinTransformerV2', arch={{_base_.swinv2_nano_arch}},
        img_size=112, window_size=7, pad_small_map=True, out_indices=(3, ),
        drop_path_rate=0.1, peft=dict(type='Full')))
work_dir = 'work_dirs/demo/pretrain_swinv2'
