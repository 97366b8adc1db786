_base_ = './upernet_swin-l-p4-w7-mona_8xb2-160k_ade20k-512x512.py'
pretrained = '{{$MONA_MM_PRETRAINED:data/pretrained}}/swin_tiny_patch4_window7_224.pth'
model = dict(
    backbone=dict(arch='tiny', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
