# UperNet with a Mona Swin-nano on the shapes in ADE20K folder format.
_base_ = [
    'mmseg::_base_/models/upernet_swin.py', 'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_20k.py', '../_base_/models/swin-nano.py'
]
crop_size = (128, 128)
data_preprocessor = dict(size=crop_size)
# the backbone of demo step 1 (swin-nano_1xb32-20e_shapes-cls.py; `make demo` writes it)
pretrained = 'work_dirs/demo/pretrain/epoch_20.pth'
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        _delete_=True, type='mona_mm.PEFTSwinTransformer', arch={{_base_.swin_nano_arch}},
        peft=dict(type='Mona'), out_indices=(0, 1, 2, 3), drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    # ADE-style labels (PNG 1 = background, 2..5 = shapes; reduce_zero_label shifts them to
    # 0..4): 5 classes, background included
    decode_head=dict(in_channels=[32, 64, 128, 256], channels=64, num_classes=5),
    auxiliary_head=dict(in_channels=128, channels=32, num_classes=5))
data_root = 'data/shapes/ade'
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
               img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=True)
train_dataloader = dict(
    batch_size=4, num_workers=1, persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(**dataset, data_prefix=dict(img_path='images/training',
                                             seg_map_path='annotations/training'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=1, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(**dataset, data_prefix=dict(img_path='images/validation',
                                             seg_map_path='annotations/validation'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
optim_wrapper = dict(_delete_=True, type='OptimWrapper',
                     constructor='mona_mm.PEFTOptimWrapperConstructor',
                     optimizer=dict(type='AdamW', lr=3e-4, betas=(0.9, 0.999),
                                    weight_decay=0.01))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=100),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=100, end=2000, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=2000, val_interval=2000)
default_hooks = dict(checkpoint=dict(type='mona_mm.SafeCheckpointHook',  # atomic saves
                                     by_epoch=False, interval=1000, max_keep_ckpts=1),
                     logger=dict(interval=50))
