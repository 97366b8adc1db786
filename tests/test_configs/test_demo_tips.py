"""The ``--cfg-options`` tips written in the demo configs' comments do what they say: a tip
about the pretrained backbone reaches the checkpoint the backbone loads (a top-level name
such as ``pretrained`` is substituted when the file loads, so overriding it changes
nothing)."""
import glob
import os.path as osp
import re

from mmengine.config import Config

from tests.conftest import ROOT

DEMO = sorted(glob.glob(osp.join(ROOT, 'configs', 'demo', '*.py')))
TIP = re.compile(r'--cfg-options\s+([\w.]+)=')


def _tips(path):
    comments = ' '.join(line.split('#', 1)[1] for line in open(path) if '#' in line)
    return TIP.findall(comments)


def test_tips_reach_the_backbone_checkpoint():
    tips = [(path, key) for path in DEMO for key in _tips(path)]
    assert tips  # else nothing is checked
    for path, key in tips:
        cfg = Config.fromfile(path)
        before = cfg.model.backbone.init_cfg.checkpoint
        cfg.merge_from_dict({key: 'other/backbone.pth'})
        assert cfg.model.backbone.init_cfg.checkpoint == 'other/backbone.pth' != before, \
            f'{osp.basename(path)}: --cfg-options {key}=... does not reach the backbone'
