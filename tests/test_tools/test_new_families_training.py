"""The new backbone families through the tools, on generated data: the demo's Mask R-CNN with a
Mona ResNet-18 (Mona on a CNN) and the demo's SegFormer with a Mona MiT-nano, each from the
demo's Full pretraining of its backbone, train a few iterations with only their adapters (and
the neck and heads) changing, BatchNorm statistics included, and test."""
import os.path as osp
import re

import torch

from tests.conftest import PY, run_tool
from tests.test_tools.test_train_test import CFG, SMALL, TEST, _train


def test_resnet_mask_rcnn_trains_and_tests(shapes_workspace):
    cfg = osp.join(CFG, 'mask-rcnn_r18-mona_fpn_1xb4-4e_shapes.py')
    wd = shapes_workspace / 'work_dirs' / 'mask_rcnn_r18'
    out = _train(cfg, shapes_workspace, wd, ['train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
                                            'param_scheduler.0.end=2'])
    assert 'coco/bbox_mAP' in out and 'coco/segm_mAP' in out
    trained = torch.load(wd / 'epoch_1.pth', map_location='cpu')['state_dict']
    base = torch.load(shapes_workspace / 'work_dirs' / 'demo' / 'pretrain_resnet' /
                      'epoch_20.pth', map_location='cpu')['state_dict']
    monas = {k.split('.adapters')[0] for k in trained if '.adapters.post_mlp.' in k}
    assert monas == {f'backbone.layer{i}.{j}' for i in range(1, 5) for j in range(2)}
    # every backbone tensor of the pretraining, running statistics included, is unchanged
    frozen = [k for k in base if k.startswith('backbone.') and k in trained]
    assert any('running_mean' in k for k in frozen)
    assert frozen and all(torch.equal(trained[k], base[k]) for k in frozen)
    out = run_tool([PY, TEST, cfg, str(wd / 'epoch_1.pth'), '--work-dir', str(wd / 'test'),
                    '--cfg-options', *SMALL[1:]], cwd=shapes_workspace)
    assert re.search(r'coco/bbox_mAP: [0-9.]+|testing results of the whole dataset is empty',
                     out)


def test_segformer_mit_trains_and_tests(shapes_workspace):
    cfg = osp.join(CFG, 'segformer_mit-nano-mona_1xb4-2k_shapes-ade-128x128.py')
    wd = shapes_workspace / 'work_dirs' / 'segformer'
    out = _train(cfg, shapes_workspace, wd, ['train_cfg.max_iters=3', 'train_cfg.val_interval=3',
                                            'param_scheduler.0.end=2',
                                            'param_scheduler.1.begin=2',
                                            'param_scheduler.1.end=3',
                                            'default_hooks.checkpoint.interval=3'])
    assert re.search(r'mIoU: [0-9.]+', out), out[-3000:]
    trained = torch.load(wd / 'iter_3.pth', map_location='cpu')['state_dict']
    base = torch.load(shapes_workspace / 'work_dirs' / 'demo' / 'pretrain_mit' / 'epoch_20.pth',
                      map_location='cpu')['state_dict']
    assert sum('.adapters.post_attn.' in k for k in trained) and \
        sum('.adapters.post_mlp.' in k for k in trained)
    frozen = [k for k in base if k.startswith('backbone.') and k in trained]
    assert frozen and all(torch.equal(trained[k], base[k]) for k in frozen)
    out = run_tool([PY, TEST, cfg, str(wd / 'iter_3.pth'), '--work-dir', str(wd / 'test')],
                   cwd=shapes_workspace)
    assert 'mIoU' in out
