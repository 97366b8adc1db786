# Full training of a ResNet-18 on the shapes classification set (mmpretrain): the pretrained
# backbone of the ResNet Mona configs, as swin-nano_1xb32-20e_shapes-cls.py is for the
# Swin-nano ones. Writes work_dirs/demo/pretrain_resnet/epoch_20.pth, where they read it.
_base_ = './swin-nano_1xb32-20e_shapes-cls.py'
model = dict(
    backbone=dict(
        _delete_=True, type='mona_mm.PEFTBackbone', peft=dict(type='Full'),
        module=dict(type='mmpretrain.ResNet', depth=18, out_indices=(3, ))),
    head=dict(in_channels=512))
work_dir = 'work_dirs/demo/pretrain_resnet'
