"""Mona on a CNN through the tools, on generated data: the demo's Mask R-CNN with a Mona
ResNet-18 (from the demo's Full ResNet pretraining) trains a few iterations with only its Monas
(and the detector's neck and heads) changing, BatchNorm statistics included, and tests."""
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
