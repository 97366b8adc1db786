# The Mona paper's classification recipe: Swin-L (22K) at 224, 16 images per iteration,
# AdamW wd 0.05, cosine after 20 warmup epochs, grad clip 5, 100 epochs, fp16.
# lr 1.5625e-5 (Mona on Flowers/Pets: 3.125e-5, set in those configs).
_base_ = ['mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['mona_mm'], allow_failed_imports=False)
custom_hooks = [dict(type='mona_mm.BackboneCheckpointHook')]
# atomic saves: a run killed while saving keeps its last complete checkpoint
default_hooks = dict(checkpoint=dict(type='mona_mm.SafeCheckpointHook'))
pretrained = '{{$MONA_MM_PRETRAINED:data/pretrained}}/swin_large_patch4_window7_224_22k.pth'
num_classes = 1000  # set by the dataset configs
model = dict(
    type='ImageClassifier',
    # mmpretrain's Swin; pad_small_map=True keeps the shift where the last map equals the
    # window (7x7 at 224), as the authors' (mmdet-style) Swin does
    backbone=dict(type='mona_mm.PEFTSwinTransformer', arch='large', peft=dict(type='Mona'),
                  window_size=7, drop_path_rate=0.2, out_indices=(3, ), pad_small_map=True,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=num_classes, in_channels=1536,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0), topk=(1, 5)))
data_preprocessor = dict(num_classes=num_classes, mean=[123.675, 116.28, 103.53],
                         std=[58.395, 57.12, 57.375], to_rgb=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs')
]
train_dataloader = dict(batch_size=16, num_workers=4, persistent_workers=True,
                        sampler=dict(type='DefaultSampler', shuffle=True),
                        dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=64, num_workers=4, persistent_workers=True,
                      sampler=dict(type='DefaultSampler', shuffle=False),
                      dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_evaluator = val_evaluator
max_epochs = 100
optim_wrapper = dict(
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=1.5625e-5, betas=(0.9, 0.999), weight_decay=0.05),
    clip_grad=dict(max_norm=5.0),
    paramwise_cfg=dict(custom_keys={
        'absolute_pos_embed': dict(decay_mult=0.),
        'relative_position_bias_table': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.)
    }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=20,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - 20, by_epoch=True, begin=20,
         end=max_epochs, eta_min=1e-7)
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=10)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=16)
