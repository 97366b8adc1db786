# The PEFT study at demo size on the CPU (tools/analysis_tools/peft_study.py, docs/study.md):
# Swin-nano and ViT-nano, each pretrained once on the 56-class source shapes, then every method
# on three shifted, few-shot target tasks; 3 lrs per method at seed 0 (chosen on the val
# split), the chosen lr repeated over 3 seeds (reported on the test split). Sized for about 3 hours on 2 CPU cores; resumable across sittings.
#   python tools/analysis_tools/peft_study.py configs/study/cpu.py
study_name = 'cpu'
tag = 'v1'  # part of every run's key: change it to rerun the whole study
# python -m mona_mm.datasets.shapes --study; generated when missing (arguments of
# mona_mm.datasets.generate_study_shapes, plus root)
data = dict(root='data/study_shapes', seed=0, source_per_class=120, source_val_per_class=4,
            source_size=56, shots=32, cls_val_per_class=20, cls_test_per_class=50,
            cls_size=56, scene_size=96, train_scenes=40, val_scenes=30, test_scenes=60,
            max_shapes=3)
_cfg = 'configs/study/_base_/'
backbones = {
    'swin-nano': dict(
        pretrain=dict(config=_cfg + 'swin-nano_source-cls.py', iters=2500),
        tasks=dict(cls=_cfg + 'swin-nano_target-cls.py',
                   seg=_cfg + 'fcn-linear_swin-nano_target-seg.py',
                   det=_cfg + 'mask-rcnn_swin-nano_fpn_target-det.py')),
    'vit-nano': dict(
        pretrain=dict(config=_cfg + 'vit-nano_source-cls.py', iters=5000),
        tasks=dict(cls=_cfg + 'vit-nano_target-cls.py',
                   seg=_cfg + 'fcn-linear_vit-nano_target-seg.py',
                   # at 96 px its 12x12 tokens (patch 8) hardly localise the small objects
                   # within the schedule (in trials bbox mAP <= 0.015 for fixed, Mona and
                   # full, also with an FPN or a normalised neck): docs/study.md reads this
                   # cell as noise, the Swin-nano's stride-4 maps do learn it
                   det=_cfg + 'mask-rcnn_vit-nano_target-det.py')),
}
# metric: what the lr is chosen on (val) and the table reports (test); iters: training length;
# lr: each method's default (the middle of its grid); full and partial tuning update
# pretrained weights and default lower
_lrs = dict(default=1e-3, full=3e-4, **{'partial-1': 3e-4})
# (the linear segmentation head learns faster at 3x these: its lr search peaked at the top of
# the default grid)
tasks = dict(
    cls=dict(metric='accuracy/top1', iters=150, lr=_lrs),
    seg=dict(metric='mIoU', iters=120, lr={k: 3 * v for k, v in _lrs.items()}),
    det=dict(metric='coco/bbox_mAP', iters=100, lr=_lrs),
)
methods = ['full', 'fixed', 'bitfit', 'norm-tuning', 'partial-1', 'adapter', 'lora',
           'adaptformer', 'lorand', 'mona', 'mona-mimi', 'adapter-mimi']
lr_factors = [1 / 3, 1, 3]
seeds = [0, 1, 2]
# MiMi variants: from the method's default width, remove rho of the remaining adapter
# neurons every prune_every of the schedule until the adapters hold target_ratio x fewer
# parameters, then keep training
mimi = dict(rho=0.5, target_ratio=4.0, prune_every=0.2)
# --estimate times these methods at their default lr per (backbone, task)
estimate_methods = ['full', 'mona']
