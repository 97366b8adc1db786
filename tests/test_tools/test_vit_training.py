"""The ViT family through the tools, on generated data: a Mona UperNet (mmseg's ViT) and a Mona
classifier (mmpretrain's ViT) train a few iterations and test; MiMi prunes a ViT's Monas
structurally, and a run resumed between prunes ends in the uninterrupted run's structure."""
import os.path as osp
import re

import torch

from tests.conftest import PY, run_tool

from tests.test_tools.test_train_test import CFG, TEST, _train


def test_vit_upernet_trains_and_tests(shapes_workspace):
    cfg = osp.join(CFG, 'upernet_vit-nano-mona_1xb4-2k_shapes-ade-128x128.py')
    wd = shapes_workspace / 'work_dirs' / 'upernet_vit'
    out = _train(cfg, shapes_workspace, wd, ['train_cfg.max_iters=3', 'train_cfg.val_interval=3',
                                            'param_scheduler.0.end=2',
                                            'param_scheduler.1.begin=2',
                                            'param_scheduler.1.end=3'])
    assert re.search(r'mIoU: [0-9.]+', out), out[-3000:]
    ckpt = torch.load(wd / 'iter_3.pth', map_location='cpu')
    adapters = [k for k in ckpt['state_dict'] if '.adapters.' in k]
    assert any(k.startswith('backbone.layers.3.adapters.post_mlp.') for k in adapters)
    out = run_tool([PY, TEST, cfg, str(wd / 'iter_3.pth'), '--work-dir', str(wd / 'test')],
                   cwd=shapes_workspace)
    assert 'mIoU' in out


def test_vit_classifier_trains_and_tests(shapes_workspace):
    cfg = osp.join(CFG, 'vit-nano-mona_1xb32-10e_shapes-cls.py')
    wd = shapes_workspace / 'work_dirs' / 'cls_vit'
    out = _train(cfg, shapes_workspace, wd, ['train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
                                            'param_scheduler.0.end=2'])
    assert re.search(r'accuracy/top1: [0-9.]+', out), out[-3000:]
    out = run_tool([PY, TEST, cfg, str(wd / 'epoch_1.pth'), '--work-dir', str(wd / 'test')],
                   cwd=shapes_workspace)
    assert re.search(r'accuracy/top1: [0-9.]+', out)


def _shapes(path):
    sd = torch.load(path, map_location='cpu')['state_dict']
    return {k: tuple(v.shape) for k, v in sd.items() if '.adapters.' in k}


def test_vit_mimi_prunes_structurally_with_resume(shapes_workspace):
    cfg = osp.join(CFG, 'vit-nano-mona-mimi_1xb32-4e_shapes-cls.py')
    opts = ['train_dataloader.batch_size=8', 'param_scheduler.0.end=2', 'randomness.seed=0',
            'randomness.deterministic=True', 'val_dataloader.batch_size=8']
    full = shapes_workspace / 'work_dirs' / 'mimi_vit'
    out = _train(cfg, shapes_workspace, full, opts + ['train_cfg.max_epochs=3'])
    m = re.search(r'MiMi summary: adapter parameters ([\d,]+) -> ([\d,]+)', out)
    before, after = (int(g.replace(',', '')) for g in m.groups())
    assert after < before
    # the pruned checkpoint really holds smaller tensors
    first, last = _shapes(full / 'epoch_1.pth'), _shapes(full / 'epoch_3.pth')
    assert sum(map(lambda s: torch.Size(s).numel(), last.values())) < \
        sum(map(lambda s: torch.Size(s).numel(), first.values()))
    # interrupted after epoch 2, then resumed: the schedule continues where it stopped and
    # ends in the same structure (weights differ: dropout and augmentation RNG states are not
    # checkpointed by mmengine)
    part = shapes_workspace / 'work_dirs' / 'mimi_vit_resume'
    _train(cfg, shapes_workspace, part, opts + ['train_cfg.max_epochs=2'])
    out = _train(cfg, shapes_workspace, part, opts + ['train_cfg.max_epochs=3'], resume=True)
    assert re.search(r'resumed epoch: 2', out), out[-3000:]
    assert _shapes(part / 'epoch_3.pth') == last
    meta = [torch.load(d / 'epoch_3.pth', map_location='cpu')['meta']['mona_mm_structure']
            for d in (full, part)]
    assert meta[0]['structure'] == meta[1]['structure']
