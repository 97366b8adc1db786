# PEFT study, target classification: the 4 shapes (any fill) in other colours, smaller, on a
# washed-out background with distractors, few-shot (study data: `shots` images per class);
# validation split to choose the lr, test split to report. The study sets the method
# (model.backbone.peft), lr, seed, length and the pretrained backbone.
_base_ = './swin-nano_source-cls.py'
num_classes = 4
data_root = 'data/study_shapes/target/cls'
model = dict(backbone=dict(peft=dict(type='Mona'), drop_path_rate=0.1),
             head=dict(num_classes=num_classes))
data_preprocessor = dict(num_classes=num_classes)
train_dataloader = dict(batch_size=16, dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root, data_prefix='val'))
test_dataloader = dict(
    batch_size=64, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='CustomDataset', data_root=data_root, data_prefix='test',
                 pipeline={{_base_.test_pipeline}}))
optim_wrapper = dict(optimizer=dict(lr=1e-3))
max_iters = 200
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', T_max=max_iters, by_epoch=False, begin=0, end=max_iters,
         eta_min=1e-5)
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(logger=dict(interval=20), checkpoint=dict(interval=max_iters))
