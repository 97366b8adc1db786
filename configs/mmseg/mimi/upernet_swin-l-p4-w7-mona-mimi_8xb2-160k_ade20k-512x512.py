# MiMi on Mona: start with 256 hidden neurons per adapter, remove half of the remaining
# ones (global, size-normalised L1) every 8k iterations until the adapters hold 4x fewer
# parameters, then keep training. Total budget: 160k iterations; pruning at 8k, 16k, ... stops at the target (as the Mona config).
_base_ = '../mona/upernet_swin-l-p4-w7-mona_8xb2-160k_ade20k-512x512.py'
model = dict(backbone=dict(peft=dict(type='Mona', hidden_dims=256)))
custom_hooks = [
    dict(type='mona_mm.BackboneCheckpointHook'),
    dict(type='mona_mm.MiMiPruningHook', interval=8000, by_epoch=False, rho=0.5, target_ratio=4.0,
         score='mimi', selection='global', min_neurons=0)
]
