# MiMi on the small ViT classifier (used by the tests): prune each epoch until 4x fewer
# adapter parameters.
_base_ = './vit-nano-mona_1xb32-10e_shapes-cls.py'
max_epochs = 4
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=10),
    dict(type='CosineAnnealingLR', T_max=max_epochs, by_epoch=True, begin=0, end=max_epochs,
         eta_min=1e-5)
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
custom_hooks = [
    dict(type='mona_mm.BackboneCheckpointHook'),
    dict(type='mona_mm.MiMiPruningHook', interval=1, rho=0.5, target_ratio=4.0)
]
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=5))
