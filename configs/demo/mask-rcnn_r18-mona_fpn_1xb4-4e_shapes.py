# Mona on a CNN: a Mask R-CNN with a ResNet-18 (mmdet's) whose blocks each get one Mona (after
# the residual, on the NCHW map; the backbone, BatchNorm statistics included, stays frozen), on
# the shapes (COCO format). Any ResNet config switches the same way: wrap its backbone dict in
# dict(type='mona_mm.PEFTBackbone', module=<the backbone dict>, peft=dict(type='Mona')).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py', 'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py', '../_base_/datasets/shapes_coco_instance.py'
]
custom_imports = dict(imports=['mona_mm'], allow_failed_imports=False)
# the backbone of resnet18_1xb32-20e_shapes-cls.py (its work_dir)
pretrained = 'work_dirs/demo/pretrain_resnet/epoch_20.pth'
num_classes = 4
model = dict(
    backbone=dict(
        _delete_=True, type='mona_mm.PEFTBackbone', peft=dict(type='Mona'),
        module=dict(type='mmdet.ResNet', depth=18, num_stages=4, out_indices=(0, 1, 2, 3),
                    frozen_stages=-1, norm_cfg=dict(type='BN', requires_grad=True),
                    norm_eval=True, style='pytorch',
                    init_cfg=dict(type='Pretrained', checkpoint=pretrained,
                                  prefix='backbone'))),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64,
                  anchor_generator=dict(scales=[4], strides=[4, 8, 16, 32, 64])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64),
        bbox_head=dict(in_channels=64, fc_out_channels=256, num_classes=num_classes),
        mask_roi_extractor=dict(out_channels=64),
        mask_head=dict(in_channels=64, conv_out_channels=64, num_convs=2,
                       num_classes=num_classes)),
    train_cfg=dict(rpn=dict(sampler=dict(num=128)),
                   rpn_proposal=dict(nms_pre=500, max_per_img=300),
                   rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100), rcnn=dict(max_per_img=20)))

max_epochs = 4
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(
    constructor='mona_mm.PEFTOptimWrapperConstructor',
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05),
    clip_grad=dict(max_norm=10.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[3],
         gamma=0.1)
]
default_hooks = dict(logger=dict(interval=20),
                     checkpoint=dict(type='mona_mm.SafeCheckpointHook', interval=2,
                                     max_keep_ckpts=2))
auto_scale_lr = dict(enable=False, base_batch_size=4)
