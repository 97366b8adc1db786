# MiMi on Adapter: start with 256 hidden neurons per adapter, remove half of the remaining
# ones (global, size-normalised L1) every 500 iterations until the adapters hold 4x fewer
# parameters, then keep training. Total budget: 4 epochs over VOC07+12 x3 (~12.4k iterations at 16 images); pruning ends within the first epoch (as the Adapter config).
_base_ = '../adapter/retinanet_swin-l-p4-w7-adapter_fpn_8xb2-4e_voc0712.py'
model = dict(backbone=dict(peft=dict(type='Adapter', hidden_dims=256)))
custom_hooks = [
    dict(type='mona_mm.BackboneCheckpointHook'),
    dict(type='mona_mm.MiMiPruningHook', interval=500, by_epoch=False, rho=0.5, target_ratio=4.0,
         score='mimi', selection='global', min_neurons=0)
]
