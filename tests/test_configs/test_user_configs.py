"""A user's own downstream config switched to Mona by custom_imports + one backbone line, on the
configs as shipped in the installed mmdet, mmseg and mmpretrain: the backbone is the
codebase's own class built with the config's own arguments, adapters added."""
import importlib
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope

from mona_mm.models import Mona, is_peft_backbone, iter_adapters
from mona_mm.utils import count_trainable
from tests.test_configs.utils import one_train_step

IMPORT = "custom_imports = dict(imports=['mona_mm'], allow_failed_imports=False)\n"
SWIN = "model = dict(backbone=dict(type='mona_mm.PEFTSwinTransformer'))\n"
VIT = "model = dict(backbone=dict(type='mona_mm.PEFTVisionTransformer'))\n"

# small configs: one real train step on the shapes
TRAIN = {
    'mmdet-swin-t-w7': 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py',
    'mmseg-swin-t-w7': 'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_'
                       'ade20k-512x512.py',
    'mmpretrain-swin-t-224': 'mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py',
}
# large configs (384 px, window 12, ViT, DeiT, DINOv2): built and compared to the upstream
# backbone of the same config
BUILD = {
    'mmseg-swin-b-w12-384': ('mmseg::swin/swin-base-patch4-window12-in22k-384x384-pre_upernet_'
                             '8xb2-160k_ade20k-512x512.py', SWIN),
    'mmpretrain-swin-b-384': ('mmpretrain::swin_transformer/swin-base_16xb64_in1k-384px.py',
                              SWIN),
    'mmpretrain-vit-b16-384': ('mmpretrain::vision_transformer/vit-base-p16_64xb64_in1k-'
                               '384px.py', VIT),
    'mmpretrain-deit-b': ('mmpretrain::deit/deit-base_16xb64_in1k.py', VIT),
    'mmpretrain-dinov2-b': ('mmpretrain::dinov2/vit-base-p14_dinov2-pre_headless.py', VIT),
    'mmseg-vit-b16-upernet': ('mmseg::vit/vit_vit-b16_mln_upernet_8xb2-160k_ade20k-512x512.py',
                              VIT),
}


def _switched(tmp_path, base, line):
    path = tmp_path / 'my_config.py'
    path.write_text(f"_base_ = '{base}'\n" + IMPORT + line)
    return Config.fromfile(str(path))


@pytest.mark.parametrize('name', sorted(TRAIN))
def test_user_config_switched_to_mona_trains(name, tmp_path, shapes_workspace):
    cfg = _switched(tmp_path, TRAIN[name], SWIN)
    scope = name.split('-')[0]
    assert cfg.default_scope == scope  # the downstream scope is kept
    cfg.model.backbone.init_cfg = None  # the shipped configs point at a download URL
    model = one_train_step(cfg, shapes_workspace)
    bb = model.backbone
    assert is_peft_backbone(bb) and type(bb).__mro__[2].__module__.startswith(scope)
    adapters = list(iter_adapters(bb))
    assert len(adapters) == 2 * 12 and all(isinstance(a, Mona) for _, a in adapters)
    expected = sum(sum(p.numel() for p in a.parameters()) for _, a in adapters)
    assert count_trainable(model)['backbone_trainable'] == expected


@pytest.mark.parametrize('name', sorted(BUILD))
def test_user_config_switch_keeps_the_upstream_backbone(name, tmp_path):
    base, line = BUILD[name]
    cfg = _switched(tmp_path, base, line)
    scope = base.split('::')[0]  # (DINOv2's model-only config names no default_scope)
    up_cfg = dict(Config.fromfile(_base_path(base)).model.backbone)
    ours_cfg = dict(cfg.model.backbone)
    for c in (up_cfg, ours_cfg):  # no pretrained file here
        c.pop('init_cfg', None)
        c.pop('pretrained', None)
    assert {k: v for k, v in ours_cfg.items() if k != 'type'} == \
        {k: v for k, v in up_cfg.items() if k != 'type'}  # the config's own arguments
    with DefaultScope.overwrite_default_scope(scope):
        __import__(f'{scope}.utils', fromlist=['x']).register_all_modules(False)
        torch.manual_seed(0)
        ours = MODELS.build(ours_cfg)
        torch.manual_seed(0)
        upstream = MODELS.build(up_cfg)
    assert is_peft_backbone(ours) and isinstance(ours, type(upstream))
    theirs = {k: v.shape for k, v in upstream.state_dict().items()}
    mine = {k: v.shape for k, v in ours.state_dict().items() if '.adapters.' not in k}
    assert mine == theirs
    n_blocks = len(ours.peft_blocks)
    adapters = list(iter_adapters(ours))
    assert len(adapters) == 2 * n_blocks and all(isinstance(a, Mona) for _, a in adapters)
    trainable = {n for n, p in ours.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in ours.named_parameters() if '.adapters.' in n}


def _base_path(base):
    scope, rel = base.split('::')
    pkg = importlib.import_module(scope)
    return osp.join(osp.dirname(pkg.__file__), '.mim', 'configs', rel)


def test_swin_v2_config_switch_is_refused(tmp_path):
    cfg = _switched(tmp_path, 'mmpretrain::swin_transformer_v2/swinv2-base-w16_in21k-pre_'
                       '16xb64_in1k-256px.py', SWIN)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        with pytest.raises(ValueError, match='Swin V2'):
            MODELS.build(dict(cfg.model.backbone))
