# The Mona paper's VOC recipe: RetinaNet, Swin-L (22K) stages 1-3, FPN on (384, 768, 1536),
# drop path 0.2, AdamW 1e-4 / wd 0.05, 4 epochs over VOC07+12 repeated 3x, step at epoch 3,
# test on VOC07 at 1000x600. The PEFT method is set per config.
_base_ = ['mmdet::pascal_voc/retinanet_r50_fpn_1x_voc0712.py']
custom_imports = dict(imports=['mona_mm'], allow_failed_imports=False)
custom_hooks = [dict(type='mona_mm.BackboneCheckpointHook')]
# atomic saves: a run killed while saving keeps its last complete checkpoint
default_hooks = dict(checkpoint=dict(type='mona_mm.SafeCheckpointHook'))
pretrained = '{{$MONA_MM_PRETRAINED:data/pretrained}}/swin_large_patch4_window7_224_22k.pth'
model = dict(
    backbone=dict(
        _delete_=True, type='mona_mm.PEFTSwinTransformer', arch='large',
        peft=dict(type='Mona'), window_size=7, drop_path_rate=0.2, out_indices=(1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[384, 768, 1536], start_level=0, add_extra_convs='on_input',
              num_outs=5))
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={
        'absolute_pos_embed': dict(decay_mult=0.),
        'relative_position_bias_table': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.)
    }),
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999),
                   weight_decay=0.05))
