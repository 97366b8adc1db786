_base_ = './retinanet_swin-l-p4-w7-mona_fpn_8xb2-4e_voc0712.py'
pretrained = '{{$MONA_MM_PRETRAINED:data/pretrained}}/swin_tiny_patch4_window7_224.pth'
model = dict(
    backbone=dict(arch='tiny', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[192, 384, 768]))
