# Demo step 1: full training of a small Swin on the shapes classification set (mmpretrain).
_base_ = ['mmpretrain::_base_/default_runtime.py', '../_base_/models/swin-nano.py']
model = dict(
    type='ImageClassifier',
    # mmpretrain's Swin; pad_small_map: the last stage's 4x4 map is smaller than the window
    backbone=dict(type='mona_mm.PEFTSwinTransformer', arch={{_base_.swin_nano_arch}},
                  peft=dict(type='Full'), out_indices=(3, ), drop_path_rate=0.1,
                  pad_small_map=True),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=4, in_channels=256,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0), topk=(1, )))
data_preprocessor = dict(num_classes=4, mean=[123.675, 116.28, 103.53],
                         std=[58.395, 57.12, 57.375], to_rgb=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs')
]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
data_root = 'data/shapes/cls'
train_dataloader = dict(
    batch_size=32, num_workers=1, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='CustomDataset', data_root=data_root, data_prefix='train',
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=32, num_workers=1, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='CustomDataset', data_root=data_root, data_prefix='val',
                 pipeline=test_pipeline))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
optim_wrapper = dict(constructor='mona_mm.PEFTOptimWrapperConstructor',
                     optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05),
                     clip_grad=dict(max_norm=5.0))
max_epochs = 20
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=40),
    dict(type='CosineAnnealingLR', T_max=max_epochs, by_epoch=True, begin=0, end=max_epochs,
         eta_min=1e-5)
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(type='mona_mm.SafeCheckpointHook',  # atomic saves
                                     interval=max_epochs, max_keep_ckpts=1))
