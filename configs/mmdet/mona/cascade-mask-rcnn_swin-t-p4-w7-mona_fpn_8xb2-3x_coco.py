_base_ = './cascade-mask-rcnn_swin-b-p4-w7-mona_fpn_8xb2-3x_coco.py'
pretrained = '{{$MONA_MM_PRETRAINED:data/pretrained}}/swin_tiny_patch4_window7_224.pth'
model = dict(
    backbone=dict(arch='tiny', drop_path_rate=0.2,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
