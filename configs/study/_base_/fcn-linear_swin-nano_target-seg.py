# PEFT study, target semantic segmentation: a linear decoder on a Swin-nano (mmseg's FCNHead
# with num_convs=0, as mmseg's Segmenter "linear" configs: one 1x1 conv over the four stages'
# maps, resized to stride 4 and concatenated), 96-px scenes of small, muted shapes on clutter
# (ADE20K folder format; labels 1 background, 2..5 shapes, read with reduce_zero_label: 5
# classes). A linear head learns within the study's short schedule (a randomly initialised
# UperNet only predicted background there), and it puts the work on the backbone: what the
# methods differ in. Few training scenes; val split to choose the lr, test split to report. The
# study sets the method, lr, seed, length and the pretrained backbone.
_base_ = [
    'mmseg::_base_/models/fcn_r50-d8.py', 'mmseg::_base_/default_runtime.py',
    '../../_base_/models/swin-nano.py'
]
crop_size = (96, 96)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,  # the base's ResNet weights; the study sets the backbone's init_cfg
    backbone=dict(
        _delete_=True, type='mona_mm.PEFTSwinTransformer', arch={{_base_.swin_nano_arch}},
        peft=dict(type='Mona'), out_indices=(0, 1, 2, 3), drop_path_rate=0.1),
    decode_head=dict(in_channels=[32, 64, 128, 256], in_index=[0, 1, 2, 3], channels=480,
                     input_transform='resize_concat', num_convs=0, concat_input=False,
                     dropout_ratio=0.0, num_classes=5),
    auxiliary_head=None)
data_root = 'data/study_shapes/target/ade'
metainfo = dict(classes=('background', 'circle', 'square', 'triangle', 'star'),
                palette=[[120, 120, 120], [220, 20, 60], [0, 128, 255], [255, 200, 0],
                         [60, 180, 75]])
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=crop_size, ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.9),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=crop_size, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
dataset = dict(type='BaseSegDataset', data_root=data_root, metainfo=metainfo,
               img_suffix='.png', seg_map_suffix='.png', reduce_zero_label=True)
train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(**dataset, data_prefix=dict(img_path='images/train',
                                             seg_map_path='annotations/train'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(**dataset, data_prefix=dict(img_path='images/val',
                                             seg_map_path='annotations/val'),
                 pipeline=test_pipeline))
test_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(**dataset, data_prefix=dict(img_path='images/test',
                                             seg_map_path='annotations/test'),
                 pipeline=test_pipeline))
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
optim_wrapper = dict(type='OptimWrapper',
                     constructor='mona_mm.PEFTOptimWrapperConstructor',
                     optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999),
                                    weight_decay=0.01),
                     clip_grad=dict(max_norm=5.0))
max_iters = 200
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=20, end=max_iters, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# mmseg keeps its default hooks in the schedule files, which this config does not inherit
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='mona_mm.SafeCheckpointHook', by_epoch=False, interval=max_iters,
                    max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
