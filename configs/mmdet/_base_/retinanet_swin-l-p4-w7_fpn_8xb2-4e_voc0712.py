# The Mona paper's VOC recipe (the authors' code and logs, ported to mmdet 3.x): RetinaNet,
# Swin-L (22K) stages 1-3, FPN on (384, 768, 1536), drop path 0.2, patch embedding frozen,
# AdamW 1e-4 / wd 0.05 (no decay on position tables and norms), no warmup, 4 epochs over
# VOC07+12 repeated 3x, step at epoch 3, mixed precision, test on VOC07 at 1000x600
# (11-point mAP). The PEFT method is set per config. What still differs from the authors'
# runs, and why: docs/reproduction.md.
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
        # the authors' frozen_stages=1 freezes only the patch embedding: that is 0 in
        # mmdet's counting (1 here would freeze stage 0 and its adapters too)
        frozen_stages=0,
        # the authors' Swin has no final `norm`: the checkpoint's is unused, the out norms
        # keep their fresh init (1, 0)
        pretrained_out_norm=False,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[384, 768, 1536], start_level=0, add_extra_convs='on_input',
              num_outs=5))
# mmdet 3.x's VOC config ignores ground-truth boxes under 32 px in training
# (filter_cfg.bbox_min_size=32); mmdet 2.x's, which the authors used, keeps them
train_dataloader = dict(
    dataset=dict(
        dataset=dict(datasets=[
            dict(type='VOCDataset', data_root={{_base_.data_root}},
                 ann_file=f'VOC{year}/ImageSets/Main/trainval.txt',
                 data_prefix=dict(sub_data_root=f'VOC{year}/'),
                 filter_cfg=dict(filter_empty_gt=True, min_size=32),
                 pipeline={{_base_.train_pipeline}}, backend_args=None)
            for year in (2007, 2012)
        ])))
optim_wrapper = dict(
    type='AmpOptimWrapper',  # the authors: apex O1, dynamic loss scale
    constructor='mona_mm.PEFTOptimWrapperConstructor',  # adapters' groups and one summary table
    paramwise_cfg=dict(custom_keys={
        'absolute_pos_embed': dict(decay_mult=0.),
        'relative_position_bias_table': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.)
    }),
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999),
                   weight_decay=0.05))
