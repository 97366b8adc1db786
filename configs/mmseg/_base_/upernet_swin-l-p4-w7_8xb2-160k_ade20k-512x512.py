# The Mona paper's ADE20K recipe: UperNet, Swin-L (22K), 512x512 crops, 2 images/GPU x 8,
# AdamW wd 0.01, poly decay (power 1) after a 1500-iter warmup, 160k iterations.
# Mona: lr 3e-4, drop path 0.2; the baselines' configs set lr 6e-5, drop path 0.3.
# What still differs from the authors' runs, and why: docs/reproduction.md.
_base_ = [
    'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'
]
custom_imports = dict(imports=['mona_mm'], allow_failed_imports=False)
custom_hooks = [dict(type='mona_mm.BackboneCheckpointHook')]
# atomic saves: a run killed while saving keeps its last complete checkpoint
default_hooks = dict(checkpoint=dict(type='mona_mm.SafeCheckpointHook'))
pretrained = '{{$MONA_MM_PRETRAINED:data/pretrained}}/swin_large_patch4_window7_224_22k.pth'
model = dict(
    backbone=dict(
        _delete_=True, type='mona_mm.PEFTSwinTransformer', arch='large',
        peft=dict(type='Mona'), window_size=7, drop_path_rate=0.2, out_indices=(0, 1, 2, 3),
        # the authors' Swin has no final `norm`: the checkpoint's is unused, the out norms
        # keep their fresh init (1, 0)
        pretrained_out_norm=False,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[192, 384, 768, 1536], num_classes=150),
    auxiliary_head=dict(in_channels=768, num_classes=150))
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper',
    constructor='mona_mm.PEFTOptimWrapperConstructor',  # adapters' groups and one summary table
    optimizer=dict(type='AdamW', lr=3e-4, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={
        'absolute_pos_embed': dict(decay_mult=0.),
        'relative_position_bias_table': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.)
    }))
# mmcv's poly policy with a linear warmup, as the authors ran it: the poly decay spans all
# 160k iterations from 0 and the warmup factor multiplies it for the first 1500 (both
# schedulers step together; with eta_min 0 their product is exactly mmcv's lr). LinearLR
# reaches its end factor at `end - 1`, mmcv's warmup at iteration 1500: hence 1501.
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1501),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0, end=160000, by_epoch=False)
]
