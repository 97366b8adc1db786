# Demo step 2: Mona-tune a Cascade Mask R-CNN on the shapes (COCO format), backbone frozen.
_base_ = [
    'mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py', 'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py', '../_base_/datasets/shapes_coco_instance.py',
    '../_base_/models/swin-nano.py'
]
# The backbone from demo step 1; another one: add
# --cfg-options model.backbone.init_cfg.checkpoint=... (pretrained=... would not reach it).
pretrained = 'work_dirs/demo/pretrain/epoch_20.pth'
num_classes = 4
model = dict(
    backbone=dict(
        _delete_=True, type='mona_mm.PEFTSwinTransformer', arch={{_base_.swin_nano_arch}},
        peft=dict(type='Mona'), out_indices=(0, 1, 2, 3), drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64,
                  anchor_generator=dict(scales=[4], strides=[4, 8, 16, 32, 64])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64),
        bbox_head=[
            dict(type='Shared2FCBBoxHead', in_channels=64, fc_out_channels=256,
                 roi_feat_size=7, num_classes=num_classes,
                 bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.],
                                 target_stds=stds),
                 reg_class_agnostic=True,
                 loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
                 loss_bbox=dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0))
            for stds in ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
                         [0.033, 0.033, 0.067, 0.067])
        ],
        mask_roi_extractor=dict(out_channels=64),
        mask_head=dict(in_channels=64, conv_out_channels=64, num_convs=2,
                       num_classes=num_classes)),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=128)),
        rpn_proposal=dict(nms_pre=500, max_per_img=300),
        rcnn=[dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=t, neg_iou_thr=t,
                                 min_pos_iou=t, match_low_quality=False, ignore_iof_thr=-1),
                   sampler=dict(type='RandomSampler', num=128, pos_fraction=0.25,
                                neg_pos_ub=-1, add_gt_as_proposals=True),
                   mask_size=28, pos_weight=-1, debug=False)
              for t in (0.5, 0.6, 0.7)]),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100),
                  rcnn=dict(max_per_img=20)))

max_epochs = 4  # the demo prints its table within 15 minutes on 2 CPU cores
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
                     checkpoint=dict(type='mona_mm.SafeCheckpointHook',  # atomic saves
                                     interval=2, max_keep_ckpts=2))
auto_scale_lr = dict(enable=False, base_batch_size=4)
