# MiMi on the demo detector: Mona adapters pruned after each of the first epochs
# (rho 0.5 of the remaining neurons, global normalised score) until the adapters hold 4x
# fewer parameters, then fine-tuning continues. Total budget: 8 epochs.
_base_ = './cascade-mask-rcnn_swin-nano-mona_fpn_1xb4-4e_shapes.py'
max_epochs = 8
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[7], gamma=0.1)
]
custom_hooks = [
    dict(type='mona_mm.BackboneCheckpointHook'),
    dict(type='mona_mm.MiMiPruningHook', interval=1, by_epoch=True, rho=0.5, target_ratio=4.0,
         score='mimi', selection='global', min_neurons=0)
]
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=2))
