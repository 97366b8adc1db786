# SegFormer with a Mona MiT-nano (mmseg's MixVisionTransformer: two Monas per block, after
# each residual) on the shapes in ADE20K folder format. Any SegFormer config switches the same
# way: dict(type='mona_mm.PEFTBackbone', module=<its backbone dict>, peft=dict(type='Mona')).
# (the data, schedule and runtime of the UperNet demo; SegFormer's all-MLP head as mmseg's
# segformer_mit-b0 config has it)
_base_ = './upernet_swin-nano-mona_1xb4-2k_shapes-ade-128x128.py'
# the backbone of mit-nano_1xb32-20e_shapes-cls.py (its work_dir)
pretrained = 'work_dirs/demo/pretrain_mit/epoch_20.pth'
model = dict(
    backbone=dict(
        _delete_=True, type='mona_mm.PEFTBackbone', peft=dict(type='Mona'),
        module=dict(type='MixVisionTransformer', embed_dims=16,
                    num_layers=[2, 2, 2, 2], num_heads=[1, 2, 5, 8],
                    out_indices=(0, 1, 2, 3), drop_path_rate=0.1,
                    init_cfg=dict(type='Pretrained', checkpoint=pretrained,
                                  prefix='backbone'))),
    decode_head=dict(_delete_=True, type='SegformerHead', in_channels=[16, 32, 80, 128],
                     in_index=[0, 1, 2, 3], channels=64, dropout_ratio=0.1, num_classes=5,
                     norm_cfg=dict(type='BN', requires_grad=True), align_corners=False,
                     loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False,
                                      loss_weight=1.0)),
    auxiliary_head=None)
