# PEFT study, pretraining: full training of the demo's Swin-nano on the 56 source classes
# (8 shapes x 7 fills, python -m mona_mm.datasets.shapes --study) at 56 px (14x14 patches:
# two windows of 7 per side, no padding). The study
# (tools/analysis_tools/peft_study.py) sets the length, seed and data root and keeps the
# final weights; every fine-tuning run of this backbone starts from them.
_base_ = ['mmpretrain::_base_/default_runtime.py', '../../_base_/models/swin-nano.py']
num_classes = 56
data_root = 'data/study_shapes/source/cls'
model = dict(
    type='ImageClassifier',
    # mmpretrain's Swin; pad_small_map: the 4x4 and 2x2 maps are smaller than the window
    # no drop path: from scratch on a few thousand images it only slows the start
    backbone=dict(type='mona_mm.PEFTSwinTransformer', arch={{_base_.swin_nano_arch}},
                  peft=dict(type='Full'), out_indices=(3, ), drop_path_rate=0.0,
                  pad_small_map=True),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=num_classes, in_channels=256,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0), topk=(1, )))
data_preprocessor = dict(num_classes=num_classes, mean=[123.675, 116.28, 103.53],
                         std=[58.395, 57.12, 57.375], to_rgb=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs')
]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
# in-process data loading: a study builds hundreds of runners in one process
train_dataloader = dict(
    batch_size=32, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='CustomDataset', data_root=data_root, data_prefix='train',
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=64, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='CustomDataset', data_root=data_root, data_prefix='val',
                 pipeline=test_pipeline))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
optim_wrapper = dict(constructor='mona_mm.PEFTOptimWrapperConstructor',
                     # 2e-3 (the demo's) leaves the loss at chance for the first epochs here
                     optimizer=dict(type='AdamW', lr=5e-4, weight_decay=0.05),
                     clip_grad=dict(max_norm=5.0))
max_iters = 1000
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', T_max=max_iters, by_epoch=False, begin=0, end=max_iters,
         eta_min=1e-5)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict()
test_cfg = dict()
log_processor = dict(by_epoch=False)
default_hooks = dict(logger=dict(interval=50),
                     checkpoint=dict(type='mona_mm.SafeCheckpointHook', by_epoch=False,
                                     interval=max_iters, max_keep_ckpts=1))
