# RetinaNet with a Mona Swin-nano on the shapes in Pascal VOC format.
_base_ = ['mmdet::pascal_voc/retinanet_r50_fpn_1x_voc0712.py', '../_base_/models/swin-nano.py']
data_root = 'data/shapes/VOCdevkit/'
metainfo = dict(classes=('circle', 'square', 'triangle', 'star'))
# the backbone of demo step 1 (swin-nano_1xb32-20e_shapes-cls.py; `make demo` writes it)
pretrained = 'work_dirs/demo/pretrain/epoch_20.pth'
model = dict(
    backbone=dict(
        _delete_=True, type='mona_mm.PEFTSwinTransformer', arch={{_base_.swin_nano_arch}},
        peft=dict(type='Mona'), out_indices=(1, 2, 3), drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 256], out_channels=64, start_level=0, num_outs=5),
    bbox_head=dict(num_classes=4, in_channels=64, feat_channels=64, stacked_convs=2))
img_scale = (128, 128)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size=4, num_workers=1,
    dataset=dict(_delete_=True, type='VOCDataset', data_root=data_root, metainfo=metainfo,
                 ann_file='VOC2007/ImageSets/Main/trainval.txt',
                 data_prefix=dict(sub_data_root='VOC2007/'),
                 filter_cfg=dict(filter_empty_gt=True, min_size=4, bbox_min_size=4),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=1,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
max_epochs = 12
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(
    constructor='mona_mm.PEFTOptimWrapperConstructor',
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-3, weight_decay=0.05),
    clip_grad=dict(max_norm=10.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[9, 11])
]
auto_scale_lr = dict(enable=False, base_batch_size=4)
# atomic saves: a run killed while saving keeps its last complete checkpoint
default_hooks = dict(checkpoint=dict(type='mona_mm.SafeCheckpointHook'))
