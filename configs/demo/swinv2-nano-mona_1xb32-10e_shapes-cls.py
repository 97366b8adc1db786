# ImageClassifier with a Mona Swin V2-nano (mmpretrain's SwinTransformerV2) on the shapes
# classification folders: the one-line switch of a V2 config is
# type='mona_mm.PEFTSwinTransformerV2'.
_base_ = ['./swin-nano-mona_1xb32-10e_shapes-cls.py', '../_base_/models/swinv2-nano.py']
# the backbone of swinv2-nano_1xb32-20e_shapes-cls.py (its work_dir)
pretrained = 'work_dirs/demo/pretrain_swinv2/epoch_20.pth'
model = dict(
    backbone=dict(
        _delete_=True, type='mona_mm.PEFTSwinTransformerV2', arch={{_base_.swinv2_nano_arch}},
        img_size=112, window_size=7, pad_small_map=True, out_indices=(3, ),
        drop_path_rate=0.1, peft=dict(type='Mona'),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
