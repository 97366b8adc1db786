# ImageClassifier with a Mona Swin-nano on the shapes classification folders (mmpretrain).
_base_ = './swin-nano_1xb32-20e_shapes-cls.py'
# the backbone of demo step 1 (swin-nano_1xb32-20e_shapes-cls.py; `make demo` writes it)
pretrained = 'work_dirs/demo/pretrain/epoch_20.pth'
model = dict(backbone=dict(peft=dict(type='Mona'),
                           init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
max_epochs = 10
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=40),
    dict(type='CosineAnnealingLR', T_max=max_epochs, by_epoch=True, begin=0, end=max_epochs,
         eta_min=1e-5)
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
