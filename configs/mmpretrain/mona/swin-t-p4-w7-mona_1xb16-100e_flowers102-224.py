_base_ = './swin-l-p4-w7-mona_1xb16-100e_flowers102-224.py'
pretrained = '{{$MONA_MM_PRETRAINED:data/pretrained}}/swin_tiny_patch4_window7_224.pth'
model = dict(
    backbone=dict(arch='tiny', init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    head=dict(in_channels=768))
