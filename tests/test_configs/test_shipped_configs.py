"""Every shipped config loads; every paper config's model (same widths, one block per stage,
no pretrained file) builds with its real neck/heads and data pipeline and runs one train step
on generated data."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config

from mona_mm.utils.pretrained import PRETRAINED
from tests.conftest import ROOT
from tests.test_configs.utils import one_train_step

# model configs; configs/study holds study specs (tools/analysis_tools/peft_study.py)
ALL = sorted(p for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
             if '/_base_/' not in p and '/configs/study/' not in p)
PAPER = [p for p in ALL if '/demo/' not in p]


#: Where the demo's pretraining configs write their backbones (`make demo` the Swin one).
DEMO_PRETRAINED = ('work_dirs/demo/pretrain/epoch_20.pth',
                   'work_dirs/demo/pretrain_vit/epoch_20.pth',
                   'work_dirs/demo/pretrain_swinv2/epoch_20.pth',
                   'work_dirs/demo/pretrain_resnet/epoch_20.pth',
                   'work_dirs/demo/pretrain_mit/epoch_20.pth',
                   'work_dirs/demo/pretrain_sam/epoch_20.pth')


def _id(p):
    return osp.relpath(p, osp.join(ROOT, 'configs'))


def _pretrained_checkpoint(cfg):
    """The pretrained backbone file of a config: ``init_cfg`` (of the wrapped module for
    ``PEFTBackbone``) or ``model.pretrained``."""
    backbone = cfg.model.backbone
    init_cfg = (backbone.get('module') or {}).get('init_cfg') or backbone.get('init_cfg') or {}
    if init_cfg.get('type') == 'Pretrained':
        return init_cfg.get('checkpoint')
    return cfg.model.backbone.get('pretrained') or cfg.model.get('pretrained')


@pytest.mark.parametrize('path', ALL, ids=_id)
def test_config_loads(path):
    cfg = Config.fromfile(path)
    assert cfg.model.backbone.type in ('mona_mm.PEFTSwinTransformer',
                                       'mona_mm.PEFTSwinTransformerV2',
                                       'mona_mm.PEFTVisionTransformer', 'mona_mm.PEFTBackbone')
    assert 'mona_mm' in cfg.custom_imports['imports']
    assert cfg.default_scope in ('mmdet', 'mmseg', 'mmpretrain')
    # adapters' own optimizer groups and one summary table (not per-tensor log lines)
    assert cfg.optim_wrapper.constructor == 'mona_mm.PEFTOptimWrapperConstructor'
    # a method that trains only part of the backbone starts from a pretrained one
    peft = cfg.model.backbone.get('peft', dict(type='Mona'))  # the PEFT backbones' default
    if (peft if isinstance(peft, str) else (peft or {}).get('type', 'Full')) != 'Full':
        checkpoint = _pretrained_checkpoint(cfg)
        assert checkpoint in DEMO_PRETRAINED or osp.basename(str(checkpoint)) in PRETRAINED, \
            f'{_id(path)}: {peft} on a backbone with no known pretrained weights ({checkpoint})'


def test_every_method_has_every_paper_config():
    methods = {'full', 'fixed', 'bitfit', 'norm-tuning', 'partial-1', 'adapter', 'lora',
               'adaptformer', 'lorand', 'mona'}
    for codebase, n in (('mmdet', 2), ('mmseg', 1), ('mmpretrain', 3)):
        for m in methods:
            got = glob.glob(osp.join(ROOT, 'configs', codebase, m, f'*swin-*-{m}_*.py'))
            swin_lb = [g for g in got if 'swin-t-' not in osp.basename(g)]
            assert len(swin_lb) == n, (codebase, m, got)


# One train step per paper config, except the COCO Cascade Mask R-CNN of every method: its
# neck and heads are the same for all methods and each method's backbone already trains a
# step in its VOC RetinaNet, ADE20K UperNet and classification configs, so Full, Mona and
# Mona+MiMi stand for the family (each Cascade step costs ~15 s; the others are still loaded
# and checked by test_config_loads).
_CASCADE_STEPS = ('-full_', '-mona_', '-mona-mimi_')
PAPER_STEPS = [p for p in PAPER if 'cascade-mask-rcnn_swin-b' not in osp.basename(p)
               or any(m in osp.basename(p) for m in _CASCADE_STEPS)]


@pytest.mark.parametrize('path', PAPER_STEPS, ids=_id)
def test_paper_config_one_train_step(path, shapes_workspace):
    cfg = Config.fromfile(path)
    bb = cfg.model.backbone
    # real widths, so the real neck/heads fit; fewer blocks
    if bb.type.endswith('PEFTSwinTransformer'):
        from mona_mm.models import SWIN_ARCHS
        bb.arch = dict(SWIN_ARCHS[bb.arch], depths=(1, 1, 1, 1))
    elif 'arch' in bb:  # mmpretrain's ViT
        from mmpretrain.models.backbones import VisionTransformer
        bb.arch = dict(VisionTransformer.arch_zoo[bb.arch], num_layers=2)
    else:  # mmseg's ViT
        bb.update(num_layers=4, out_indices=(0, 1, 2, 3))
    bb.init_cfg = None
    one_train_step(cfg, shapes_workspace)
