# The PEFT study's smoke preset (seconds; tests/test_tools/test_peft_study.py): one backbone,
# classification only, two methods, two lrs, two seeds, a few iterations on a tiny data set.
_base_ = './cpu.py'
study_name = 'smoke'
data = dict(_delete_=True, root='data/study_shapes_smoke', seed=0, source_per_class=2,
            source_val_per_class=1, source_size=32, shots=2, cls_val_per_class=2,
            cls_test_per_class=2, cls_size=32, scene_size=64, train_scenes=2, val_scenes=2,
            test_scenes=2, max_shapes=3)
_cfg = 'configs/study/_base_/'
backbones = dict(_delete_=True, **{
    'swin-nano': dict(pretrain=dict(config=_cfg + 'swin-nano_source-cls.py', iters=2),
                      tasks=dict(cls=_cfg + 'swin-nano_target-cls.py'))})
tasks = dict(_delete_=True, cls=dict(metric='accuracy/top1', iters=2, lr=dict(default=1e-3)))
methods = ['full', 'mona']
lr_factors = [1, 3]
seeds = [0, 1]
estimate_methods = ['mona']
