# The Mona paper's COCO recipe (authors' code, ported to mmdet 3.x): Cascade Mask R-CNN,
# Swin-B (22K), 4conv1fc bbox heads with GIoU and SyncBN, DETR-style multi-scale training,
# AdamW 1e-4 / wd 0.05 (no decay on position tables and norms), 36 epochs, steps 27/33,
# 500-iter warmup, 16 images per iteration, mixed precision. The PEFT method is set per config.
# What still differs from the authors' runs, and why: docs/reproduction.md.
_base_ = [
    'mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py', 'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py'
]
custom_imports = dict(imports=['mona_mm'], allow_failed_imports=False)
custom_hooks = [dict(type='mona_mm.BackboneCheckpointHook')]
# atomic saves: a run killed while saving keeps its last complete checkpoint
default_hooks = dict(checkpoint=dict(type='mona_mm.SafeCheckpointHook'))
pretrained = '{{$MONA_MM_PRETRAINED:data/pretrained}}/swin_base_patch4_window7_224_22k.pth'
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    backbone=dict(
        _delete_=True, type='mona_mm.PEFTSwinTransformer', arch='base',
        peft=dict(type='Mona'), window_size=7, drop_path_rate=0.3, patch_norm=True,
        out_indices=(0, 1, 2, 3), with_cp=False,
        # the authors' Swin has no final `norm`: the checkpoint's is unused, the out norms
        # keep their fresh init (1, 0)
        pretrained_out_norm=False,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[128, 256, 512, 1024]),
    roi_head=dict(bbox_head=[
        dict(type='ConvFCBBoxHead', num_shared_convs=4, num_shared_fcs=1, in_channels=256,
             conv_out_channels=256, fc_out_channels=1024, roi_feat_size=7, num_classes=80,
             bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.],
                             target_stds=stds),
             reg_class_agnostic=False, reg_decoded_bbox=True, norm_cfg=norm_cfg,
             loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
             loss_bbox=dict(type='GIoULoss', loss_weight=10.0))
        for stds in ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
                     [0.033, 0.033, 0.067, 0.067])
    ]))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomChoice', transforms=[
        [dict(type='RandomChoiceResize', keep_ratio=True,
              scales=[(s, 1333) for s in range(480, 801, 32)])],
        [dict(type='RandomChoiceResize', keep_ratio=True,
              scales=[(400, 1333), (500, 1333), (600, 1333)]),
         dict(type='RandomCrop', crop_type='absolute_range', crop_size=(384, 600),
              allow_negative_crop=True),
         dict(type='RandomChoiceResize', keep_ratio=True,
              scales=[(s, 1333) for s in range(480, 801, 32)])]]),
    dict(type='PackDetInputs')
]
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=train_pipeline))
max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
# mmcv's linear warmup over 500 iterations; LinearLR reaches its end factor at `end - 1`
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=501),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33],
         gamma=0.1)
]
optim_wrapper = dict(
    type='AmpOptimWrapper',
    constructor='mona_mm.PEFTOptimWrapperConstructor',  # adapters' groups and one summary table
    paramwise_cfg=dict(custom_keys={
        'absolute_pos_embed': dict(decay_mult=0.),
        'relative_position_bias_table': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.)
    }),
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999),
                   weight_decay=0.05))
auto_scale_lr = dict(enable=False, base_batch_size=16)
