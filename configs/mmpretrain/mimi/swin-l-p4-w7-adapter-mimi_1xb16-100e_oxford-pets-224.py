# MiMi on Adapter: start with 256 hidden neurons per adapter, remove half of the remaining
# ones (global, size-normalised L1) every 5 epochs until the adapters hold 4x fewer
# parameters, then keep training. Total budget: 100 epochs; pruning at epochs 5, 10, ... stops at the target (as the Adapter config).
_base_ = '../adapter/swin-l-p4-w7-adapter_1xb16-100e_oxford-pets-224.py'
model = dict(backbone=dict(peft=dict(type='Adapter', hidden_dims=256)))
custom_hooks = [
    dict(type='mona_mm.BackboneCheckpointHook'),
    dict(type='mona_mm.MiMiPruningHook', interval=5, by_epoch=True, rho=0.5, target_ratio=4.0,
         score='mimi', selection='global', min_neurons=0)
]
