"""Swin V2 and SAM's encoder through the tools, on generated data: the demo's Mona Swin V2 and
Mona SAM-ViT classifiers (each from the demo's Full pretraining of its backbone) train a few
iterations with only their adapters changing, and test."""
import os.path as osp
import re

import pytest
import torch

from tests.conftest import PY, run_tool
from tests.test_tools.test_train_test import CFG, TEST, _train


@pytest.mark.parametrize('name,last_block', [
    ('swinv2', 'backbone.stages.3.blocks.1'), ('sam', 'backbone.layers.3')])
def test_demo_classifier_trains_and_tests(shapes_workspace, name, last_block):
    cfg = osp.join(CFG, f'{name}-nano-mona_1xb32-10e_shapes-cls.py')
    wd = shapes_workspace / 'work_dirs' / f'cls_{name}'
    out = _train(cfg, shapes_workspace, wd, ['train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
                                            'param_scheduler.0.end=2'])
    assert re.search(r'accuracy/top1: [0-9.]+', out), out[-3000:]
    trained = torch.load(wd / 'epoch_1.pth', map_location='cpu')['state_dict']
    base = torch.load(shapes_workspace / 'work_dirs' / 'demo' / f'pretrain_{name}' /
                      'epoch_20.pth', map_location='cpu')['state_dict']
    adapters = [k for k in trained if '.adapters.' in k]
    assert any(k.startswith(f'{last_block}.adapters.post_mlp.') for k in adapters)
    # the frozen backbone is the pretrained one, tensor for tensor; the adapters moved
    frozen = [k for k in base if k.startswith('backbone.') and k in trained
              and not k.endswith(('relative_position_index', 'relative_coords_table'))]
    assert frozen and all(torch.equal(trained[k], base[k]) for k in frozen)
    out = run_tool([PY, TEST, cfg, str(wd / 'epoch_1.pth'), '--work-dir', str(wd / 'test')],
                   cwd=shapes_workspace)
    assert re.search(r'accuracy/top1: [0-9.]+', out)
